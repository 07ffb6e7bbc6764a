"""Frontier analysis of an ALMR × LR sweep (the paper's Section 4, Fig. 1): GP surfaces of the
averaged metric and the validation losses, the metric frontier LR*(ALMR) (Eq. 1 analog), the
loss frontier (Eq. 2 analog), the recommended (ALMR, LR) with its probability of being best, and
the D-CPT / CMR baselines on the same runs. See docs/frontier.md for every definition."""

from almr.frontier.baselines import DCPTLaw, critical_mixture_ratio
from almr.frontier.frontier import LossFrontier, MetricFrontier
from almr.frontier.recommend import Recommender
from almr.frontier.surface import GPSurface

__all__ = ["DCPTLaw", "GPSurface", "LossFrontier", "MetricFrontier", "Recommender", "critical_mixture_ratio"]

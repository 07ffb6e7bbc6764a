"""Frontier analysis of an ALMR × LR sweep (the paper's Section 4, Fig. 1): GP surfaces of the
averaged metric and the validation losses, the metric frontier LR*(ALMR) (Eq. 1 analog), the
loss frontier (Eq. 2 analog), the recommended (ALMR, LR) with its probability of being best, and
the D-CPT / CMR baselines on the same runs. See docs/frontier.md for every definition.

The estimators are importable from here (`from almr.frontier import GPSurface`) but load on first
use: `almr.config` imports `almr.frontier.config`, which runs this file, and importing them here
would load scikit-learn and SciPy (~1 s) into every `almr` command and every sweep run."""

import importlib
from typing import Any

_HOMES = {
    "DCPTLaw": "almr.frontier.baselines",
    "critical_mixture_ratio": "almr.frontier.baselines",
    "LossFrontier": "almr.frontier.frontier",
    "MetricFrontier": "almr.frontier.frontier",
    "Recommender": "almr.frontier.recommend",
    "GPSurface": "almr.frontier.surface",
}
__all__ = ["DCPTLaw", "GPSurface", "LossFrontier", "MetricFrontier", "Recommender", "critical_mixture_ratio"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'almr.frontier' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

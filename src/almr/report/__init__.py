"""The pipeline's report (`almr run`'s last stage): the paper's tables and figures from a
pipeline folder, the paper's findings decided with their noise, every number with its file."""

from almr.report.build import build_report

__all__ = ["build_report"]

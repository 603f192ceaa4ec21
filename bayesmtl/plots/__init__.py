"""Plots: functions of an ArviZ DataTree (never of estimator internals)."""

from .omega import cluster_order, plot_task_correlation

__all__ = ["cluster_order", "plot_task_correlation"]

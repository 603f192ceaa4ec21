"""Plots: functions of an ArviZ DataTree (never of estimator internals)."""

from .omega import cluster_order, plot_task_correlation
from .relation import plot_directed_relation, plot_task_relation, relation_variable

__all__ = ["cluster_order", "plot_task_correlation", "plot_directed_relation",
           "plot_task_relation", "relation_variable"]

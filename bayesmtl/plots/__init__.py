"""Plots: functions of an ArviZ DataTree (never of estimator internals)."""

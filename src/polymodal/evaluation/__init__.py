"""Metrics for every task, computed from predictions and true values."""

"""Experiment tracking backends (MLflow)."""

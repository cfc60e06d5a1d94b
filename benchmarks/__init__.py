"""Measurements of hpo (not tests: nothing here fails on a wall-clock figure)."""

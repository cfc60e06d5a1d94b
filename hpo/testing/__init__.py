"""Test helpers shipped with hpo: the conformance suite every strategy must pass."""

from hpo.testing.conformance import SchedulerConformance, SearcherConformance

__all__ = ["SchedulerConformance", "SearcherConformance"]

"""Every built-in strategy passes the shared conformance suite."""

from __future__ import annotations

import pytest

from hpo.testing import SchedulerConformance, SearcherConformance


class TestGrid(SearcherConformance):
    searcher = "grid"


class TestRandom(SearcherConformance):
    searcher = "random"


class TestSobol(SearcherConformance):
    searcher = "sobol"


class TestTPE(SearcherConformance):
    searcher = "tpe"


class TestCmaEs(SearcherConformance):
    searcher = "cmaes"


class TestGP(SearcherConformance):
    searcher = "gp"


class TestNSGA2(SearcherConformance):
    searcher = "nsga2"


@pytest.mark.slow
class TestFIFO(SchedulerConformance):
    scheduler = "fifo"


@pytest.mark.slow
class TestASHA(SchedulerConformance):
    scheduler = "asha"


@pytest.mark.slow
class TestHyperBand(SchedulerConformance):
    scheduler = "hyperband"


@pytest.mark.slow
class TestMedian(SchedulerConformance):
    scheduler = "median"

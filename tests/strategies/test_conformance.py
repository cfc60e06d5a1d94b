"""Every built-in strategy passes the shared conformance suite."""

from __future__ import annotations

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


class TestFIFO(SchedulerConformance):
    scheduler = "fifo"


class TestASHA(SchedulerConformance):
    scheduler = "asha"


class TestHyperBand(SchedulerConformance):
    scheduler = "hyperband"


class TestMedian(SchedulerConformance):
    scheduler = "median"


class TestPBT(SchedulerConformance):
    searcher = "random"
    scheduler = "pbt"

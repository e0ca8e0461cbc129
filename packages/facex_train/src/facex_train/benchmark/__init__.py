"""The paper's evaluation protocols (Tables 1-3) on a user's copy of FF++, VoxCeleb1 and FFHQ (``facex benchmark``).

``protocols``: each benchmark as data (datasets, task, pair-list rule, columns); ``datasets``: readers for the
public on-disk layouts; ``runner``: one measurement path for every protocol, resumable, results in the paper's
layout beside the published rows (``paper_tables.json``).
"""

from facex_train.benchmark.protocols import PROTOCOLS, PairSettings, Protocol, get_protocol
from facex_train.benchmark.runner import BenchmarkError, BenchmarkRun, RunSettings

__all__ = ["PROTOCOLS", "BenchmarkError", "BenchmarkRun", "PairSettings", "Protocol", "RunSettings", "get_protocol"]

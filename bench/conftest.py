"""pytest-benchmark suites (not part of `make test`; pyproject's testpaths is tests/).

    pytest bench/ --benchmark-autosave              # save .benchmarks/<machine>/NNNN_*.json
    pytest bench/ --benchmark-compare               # compare with the last saved run
    infer-opt import-benchmark .benchmarks/.../0001_*.json   # -> a results CSV for compare/report

INFER_OPT_BENCH_THREADS (default 2) sets torch threads.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("INFER_OPT_BENCH_THREADS", "2")))

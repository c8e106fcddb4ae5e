"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/<script>.py``, so this
directory is on ``sys.path``)."""
from __future__ import annotations

import time


def best_of(fn, repeat=3):
    """The least wall time (``time.perf_counter``, seconds) of ``repeat`` calls of ``fn()``."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best

"""The machine's read bandwidth, measured in the same run as the variants: a large array read with
`threads` threads, much larger than the last-level cache, so that the bytes come from memory.

Each thread sums its own contiguous slice (numpy releases the GIL for the reduction), the best of
`rounds` timed passes counts: the attainable rate, the one a memory-bound kernel can approach.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

DEFAULT_MB = 512  # well above any L3 here (a few tens of MB)


def read_bandwidth(threads: int = 1, megabytes: int = DEFAULT_MB, rounds: int = 5) -> float:
    """Bytes per second read from memory by `threads` threads (best of `rounds` passes)."""
    data = np.ones(megabytes * 2**20 // 8, dtype=np.float64)  # written once: the pages are really there
    slices = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(rounds + 1):  # the first pass warms the threads
            start = time.perf_counter()
            list(pool.map(np.sum, slices))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def bound_ms(nbytes: int, bytes_per_second: float) -> float:
    """The shortest time a step reading `nbytes` can take at that bandwidth, in milliseconds."""
    return 1e3 * nbytes / bytes_per_second

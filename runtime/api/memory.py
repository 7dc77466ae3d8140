"""Give the memory of big requests back to the OS.

glibc's malloc serves blocks of at least M_MMAP_THRESHOLD bytes with their own mmap (returned to
the OS on free), but raises that threshold each time such a block is freed (up to 32 MiB on
64-bit), so after one 4 MB request the next ones land in the heap arenas and stay resident (the
probe saw RSS climb from 117 MiB to ~1 GiB over four 3.9 MB prompts; tests/test_big_prompts.py
measures RSS after eight more). Fixing the threshold turns the dynamic adjustment off: every
block of 1 MiB or more (a request's bytes, its decoded text) is mapped on its own and unmapped
when freed. Smaller blocks are unaffected. And the Python objects of a big request are
collected soon after it ends (`BigRequestCollector`).
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc

M_MMAP_THRESHOLD = -3          # mallopt parameter number in glibc's malloc.h
BIG_BLOCK = 1 << 20


def map_big_blocks(threshold: int = BIG_BLOCK) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes (process-wide); False where the C
    library has no mallopt (not glibc: nothing to do)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


class BigRequestCollector:
    """A refused or tokenized multi-megabyte text stays reachable from exception tracebacks in
    reference cycles (the abort path of the gRPC handlers) until the cyclic GC runs, and that
    counts objects, not bytes: a few huge strings never trigger it (RSS grew ~8 MiB per 3.9 MB
    request until a full collection). After a request that carried at least BIG_TEXT
    characters, one full collection runs DELAY_S later on the event loop (at most one pending),
    once the request's frames are gone."""

    BIG_TEXT = 1 << 20
    DELAY_S = 0.2

    def __init__(self):
        self._pending = False

    def saw(self, text: str) -> None:
        """Call on the event loop with each request text."""
        if len(text) < self.BIG_TEXT or self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self.DELAY_S, self._collect)

    def _collect(self) -> None:
        self._pending = False
        gc.collect()

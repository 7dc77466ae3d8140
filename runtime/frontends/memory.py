"""Give the memory of big requests back to the OS.

glibc's malloc serves blocks of at least M_MMAP_THRESHOLD bytes with their own mmap (returned to
the OS on free), but raises that threshold each time such a block is freed (up to 32 MiB on
64-bit), so after one 4 MB request the next ones land in the heap arenas and stay resident (the
probe saw RSS climb from 117 MiB to ~1 GiB over four 3.9 MB prompts; tests/test_big_prompts.py
measures RSS after eight more). Fixing the threshold turns the dynamic adjustment off: every
block of 1 MiB or more (a request's bytes, its decoded text) is mapped on its own and unmapped
when freed. Smaller blocks are unaffected.
"""
from __future__ import annotations

import ctypes
import ctypes.util

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

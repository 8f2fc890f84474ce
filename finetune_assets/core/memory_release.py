"""Hand freed memory back to the system between the stages' large phases (Linux, glibc).

Encoding thousands of texts allocates and frees many vocabulary- and batch-sized buffers; glibc keeps the freed
pages in its heaps, so the process's resident memory grows with the texts encoded although the live data does
not. `malloc_trim(0)` returns those pages. Elsewhere (macOS, musl) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Return the heap's freed pages to the system; True when glibc did so."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False

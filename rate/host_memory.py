"""Keep freed host memory in the process for reuse (glibc malloc), so that a training step does
not page-fault its activations in again every step.

A training step allocates and frees the same large activation tensors every batch (tens of
megabytes each at batch 128).  By default glibc serves any block above its mmap threshold
(at most 32 MB) with a fresh ``mmap`` and returns it to the kernel on free, and trims the heap's
top above its trim threshold; the next step then pays a page fault for every 4 KB page it
touches again: a segment's 35 MB ``F.linear`` at the RATE run script's size took 12.3 ms into a
new tensor against 3.2 ms into a reused one (``python -m eval.bench.host_memory``, 2-core EPYC).  Turning off malloc's mmap path and raising the trim
threshold keeps freed blocks in the heap, where the next batches reuse them without faults
(after a few batches: torch's 64-byte aligned requests ask for a little more than a freed block
of the same size, so reuse starts once freed neighbours have merged).

The price is fragmentation: a kept heap cannot return a hole pinned by a live allocation, so the
peak resident memory rises, by how much depends on the allocation pattern.  At the RATE run
script's size (results/performance_official.md, runs 3 and 4) full BPTT trained 1.40x faster at
1.27x the peak, the official mode gained no speed at 1.2x the peak, and the re-created official
code 1.17x faster at 2.1x its peak.  So it is an opt-in (``train.keep_freed_memory``), for runs
with memory to spare.

Process-wide and one-way (a trainer's whole life), and a no-op where the C library has no
``mallopt`` (macOS) or ignores it (musl): :func:`keep_freed_memory` reports whether it applied.
"""

from __future__ import annotations

import ctypes

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# mallopt takes an int: the largest top-of-heap kept free before malloc returns memory to the kernel.
_TRIM_THRESHOLD = 2**31 - 1

_applied: bool | None = None  # the result of the first call


def keep_freed_memory() -> bool:
    """Make malloc keep freed blocks for reuse (no mmap'd blocks, a 2 GB trim threshold).

    Returns True where glibc's ``mallopt`` accepted both settings, False where there is none
    (the process's allocator is left as it was).  Only the first call acts."""
    global _applied
    if _applied is None:
        _applied = _set_mallopt()
    return _applied


def _set_mallopt() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already runs on
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success.
    return mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and mallopt(M_MMAP_MAX, 0) == 1

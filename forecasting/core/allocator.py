"""The C allocator's settings for a process that trains and forecasts: freed memory is kept for reuse.

glibc's malloc serves requests above its mmap threshold (at most 32 MiB) with fresh mappings and
returns them to the kernel when freed, and trims the top of its heap as soon as enough is free.
Torch's CPU kernels allocate their outputs anew for every batch: a recurrent layer's gates over a
window of 168-336 steps are tens of MiB at the batch sizes we train and predict with. Every batch
then page-faults its buffers in and the kernel zeroes them. `benchmarks/allocator.py` (the demo's GRU,
one torch thread, AMD EPYC): forecasts of 20,000 series took 1.30x as long under glibc's defaults as
with this setting and 1.51x under Dask's worker default (trim at 64 KiB); training epochs 0.96x and
1.34x (a tie with glibc's default: its epochs barely page-fault).

`keep_freed_memory` turns both off (no mmap for large blocks, no trimming), so a buffer freed by
one batch is reused by the next. The cost is that a process keeps its peak heap until it exits,
which suits the short-lived commands and workers that call it. It is process-wide: called at the
command-line entry points only (and passed to Dask workers as MALLOC_* variables, which glibc
reads at start-up), never on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)
NEVER_TRIM = 2**31 - 1  # the largest threshold mallopt takes (an int): trimming never triggers
# The same settings as environment variables, for processes started by someone else (Dask's Nanny).
ENVIRON = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(NEVER_TRIM)}


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and never give freed memory back while the process
    runs; False where the C library is not glibc (nothing is changed there)."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))

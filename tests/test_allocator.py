"""The allocator setting of our entry points: a large buffer freed by one batch is reused by the next,
not page-faulted in again (each case runs in a fresh interpreter: the setting is process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROGRAM = """
import json, resource, sys
import numpy as np
from forecasting.core.allocator import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):  # a 64 MiB buffer per "batch", written and freed, as torch's outputs are
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    a = np.ones(16 * 2**20, dtype=np.float32)
    del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""
PAGES = 64 * 2**20 // 4096  # the buffer's 4 KiB pages


def batches(mode: str) -> dict:
    # numpy would ask for 2 MiB pages for so large a buffer; torch's CPU allocator does not
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True,
                         env=env).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_freed_buffer_is_reused_instead_of_faulted_in_again():
    default, kept = batches("default"), batches("keep")
    if not kept["kept"]:
        pytest.skip("the C library is not glibc")
    # By default every batch maps its buffer anew: each of its pages is faulted in (and zeroed).
    assert all(f >= 0.9 * PAGES for f in default["faults"][1:]), default
    # Kept: the first batch grows the heap once; the later ones reuse it without a fault per page.
    assert kept["faults"][0] >= 0.9 * PAGES and all(f < PAGES // 10 for f in kept["faults"][1:]), kept

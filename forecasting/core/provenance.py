"""Where a model came from: dataset fingerprint and code version."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

import pandas as pd

from forecasting import __version__


def dataset_fingerprint(df: pd.DataFrame) -> str:
    """A short SHA-256 of the frame's values and column names (row order matters)."""
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


@functools.cache  # one git call per process: every run records it
def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__

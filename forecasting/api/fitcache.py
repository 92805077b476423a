"""Fitted forecasters kept by what determines them, so that training the same configuration on the
same data and split twice loads the first fit instead.

The final refit of a search trains exactly what its best trial (or the K best, for an ensemble)
already trained: same configuration, seed, data and split. Each finished trial is kept here under a
digest of those (the configuration as JSON, the dataset's fingerprint, the split's boundaries), with
its fit record; the refit then loads it, and a configuration that differs in anything (another epoch
budget, a re-ingested dataset) simply misses and trains. Writes go to a temporary folder renamed into
place, so a reader never sees half a fit and two workers writing one key both leave a whole one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.core.data import Split
from forecasting.core.training import FitResult


@dataclass(frozen=True)
class FitCache:
    """A folder of fitted forecasters of one dataset (`fingerprint`), keyed by configuration and split."""

    root: Path
    fingerprint: str

    def key(self, cfg: ForecasterConfig, split: Split) -> str:
        """The digest of what decides a fit: configuration, dataset and split boundaries."""
        h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
        h.update(self.fingerprint.encode())
        h.update("\0".join(map(str, split.ids)).encode())
        for a in (split.lengths, split.train_end, split.val_end):
            h.update(np.asarray(a, dtype=np.int64).tobytes())
        return h.hexdigest()[:32]

    def load(self, key: str) -> Forecaster | None:
        """The forecaster kept under `key` with its fit record, or None."""
        path = Path(self.root) / key
        if not (path / "fit.json").is_file():
            return None
        f = Forecaster.load(path)
        f.fit_result_ = FitResult(**json.loads((path / "fit.json").read_text()))
        return f

    def save(self, key: str, f: Forecaster) -> None:
        """Keep a fitted forecaster under `key` (a whole folder appears at once, or nothing)."""
        path = Path(self.root) / key
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        f.save(tmp)
        (tmp / "fit.json").write_text(json.dumps(asdict(f.fit_result_)))
        try:
            os.replace(tmp, path)
        except OSError:  # another process kept the same fit first
            shutil.rmtree(tmp, ignore_errors=True)


def fit_or_load(cfg: ForecasterConfig, df: pd.DataFrame, split: Split, cache: FitCache | None = None
                ) -> tuple[Forecaster, bool]:
    """A forecaster of `cfg` fitted on (df, split): the kept one when `cache` has it (True), else
    trained now and kept (False)."""
    key = cache.key(cfg, split) if cache else ""
    kept = cache.load(key) if cache else None
    if kept is not None:
        return kept, True
    f = Forecaster(cfg)
    f.fit(df, split)
    if cache:
        cache.save(key, f)
    return f, False

"""Combine every family's final model into one, or keep the best family alone: decided on held-out
validation halves, as the ensemble check decides within a family.

Models of different kinds err differently (a GRU and an LSTM reading other lookbacks, a hybrid that
smooths each series' level), and the mean of their forecasts is often better than the best of them:
the M4 competition's finding that combinations beat single methods, and why its winners ensembled.
The families' final models are already fitted, so the combination costs no training: its members
are every member of every kept family's final model, combined as one `Ensemble` (each chosen trial
weighs the same).

Choosing the best family on the same windows that score it would flatter it (the winner's curse), so
the check cross-fits as `ensemble_check` does: the families are ranked on one half of the validation
windows, the best family alone and the combination are scored on the other, then the halves swap. A
family whose validation score is over `MAX_MEMBER_LOSS_RATIO` times the best one's is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from forecasting.api.ensemble import COMBINES, Ensemble, members
from forecasting.api.ensemble_check import MAX_WINDOWS, kept, score, validation_forecasts
from forecasting.api.forecaster import Fitted
from forecasting.core.data import Split

COMBINED = "combined"  # the comparison row and registered model (`<dataset>-combined`) of the combination


@dataclass(frozen=True)
class FamilyMix:
    """What the check found: the families to combine (best first; one: the best alone) and the two
    cross-fitted scores."""

    kept: tuple[str, ...]
    single: float  # the best family alone, on the half it was not chosen on
    combined: float  # the combination of the kept families, likewise
    metric: str

    @property
    def combines(self) -> bool:
        """Whether the combination is kept: two or more families, no worse than the best alone."""
        return len(self.kept) > 1 and self.combined <= self.single

    def params(self) -> dict:
        """What the pipeline run and the combination's run record of the check."""
        return {"combine_check_metric": self.metric, "combine_check_single": self.single,
                "combine_check_combined": self.combined, "combined_families": ",".join(self.kept)}

    def describe(self) -> str:
        """One line for the user."""
        verdict = f"registered as '{COMBINED}'" if self.combines else "not registered (the best family alone is kept)"
        return (f"families combined ({'+'.join(self.kept)}) on held-out validation halves: {self.metric} "
                f"{self.combined:.4f}, the best family alone {self.single:.4f}: {verdict}")


def pooled(finals: list[Fitted], combine: str = "mean") -> Ensemble:
    """One ensemble of every member of `finals` (fitted on one dataset, split and horizon)."""
    return Ensemble([m for f in finals for m in members(f)], combine)


def cross_fitted(preds: np.ndarray, owner: np.ndarray, y: np.ndarray, scale: np.ndarray, half: np.ndarray,
                 metric: str = "mase", combine: str = "mean") -> tuple[float, float]:
    """Cross-fitted scores (best family alone, combination of the kept families) of the members'
    forecasts preds [M, N, H], member m of family owner[m], for windows with actuals y [N, H], MASE
    scales `scale` [N] and `half` [N]: each family's forecast combines its own members; families
    ranked on one half, scored on the other, both ways; each the window-weighted mean of its two."""
    agg = COMBINES[combine]
    families = np.unique(owner)
    own = np.stack([agg(preds[owner == f], axis=0) for f in families])  # [F, N, H]
    single = combined = 0.0
    for h in (0, 1):
        pick, held = half != h, half == h
        top = kept([score(y[pick], p[pick], scale[pick], metric) for p in own], len(families))
        share = held.mean()
        single += share * score(y[held], own[top[0]][held], scale[held], metric)
        chosen = np.isin(owner, families[top])
        combined += share * score(y[held], agg(preds[chosen][:, held], axis=0), scale[held], metric)
    return float(single), float(combined)


def check(finals: dict[str, Fitted], df: pd.DataFrame, split: Split, metric: str = "mase", combine: str = "mean",
          max_windows: int = MAX_WINDOWS) -> FamilyMix | None:
    """Whether to combine the families' final models `finals` (name -> model, one dataset, split and
    horizon) or keep the best alone, cross-fitted on the validation windows; None with fewer than two
    families or a half without windows. `kept` ranks the families on every validation window."""
    if len(finals) < 2:
        return None
    names = list(finals)
    ens = pooled([finals[n] for n in names], combine)
    owner = np.repeat(np.arange(len(names)), [len(members(finals[n])) for n in names])  # [M]
    found = validation_forecasts(ens, df, split, max_windows)
    if found is None:
        return None
    preds, y, scale, half = found  # [M, N, H], [N, H], [N], [N]
    single, combined = cross_fitted(preds, owner, y, scale, half, metric, combine)
    losses = [score(y, COMBINES[combine](preds[owner == i], axis=0), scale, metric) for i in range(len(names))]
    return FamilyMix(tuple(names[i] for i in kept(losses, len(names))), single, combined, metric)

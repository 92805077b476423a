"""PNG figures for runs: forecast versus actual, loss curves. Uses matplotlib's object API
(no pyplot state, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def forecast_vs_actual(
    path: str | Path, y: np.ndarray, y_hat: np.ndarray, series: np.ndarray, ids: tuple[str, ...],
    n_series: int = 4, title: str = "",
) -> Path:
    """For a few series, the last test window's forecast against what happened."""
    chosen = list(dict.fromkeys(series.tolist()))[:n_series]
    fig = Figure(figsize=(10, 2.6 * len(chosen)), layout="constrained")
    axes = fig.subplots(len(chosen), 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, chosen, strict=True):
        rows = np.flatnonzero(series == s)
        last = rows[-1]
        steps = np.arange(y.shape[1])
        ax.plot(steps, y[last], label="actual", color="black")
        ax.plot(steps, y_hat[last], label="forecast", color="tab:blue")
        ax.set_title(f"{ids[s]} (last test window)", fontsize=9)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return Path(path)


def loss_curves(path: str | Path, history: list[dict], title: str = "") -> Path:
    """Training and validation loss per epoch."""
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    epochs = [h["epoch"] + 1 for h in history]
    ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (standardized)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.savefig(path, dpi=90)
    return Path(path)

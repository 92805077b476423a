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


def backtest_plot(path: str | Path, bt, title: str = "", n_series: int = 1) -> Path:
    """Top: MASE of each predictor per cutoff. Bottom: the first series' actuals with the model's
    forecasts from every cutoff (timestamps on the x axis)."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    for name, part in bt.by_cutoff.groupby("predictor", sort=False):
        top.plot(part["cutoff"], part["mase"], marker="o", label=name)
    top.set_ylabel("MASE per cutoff")
    top.legend(fontsize=8)
    frame = bt.forecasts
    model = bt.metrics["predictor"].iloc[0]
    uid = frame["unique_id"].iloc[0]
    one = frame[frame["unique_id"] == uid]
    bottom.plot(one["ds"], one["y"], color="black", label="actual")
    for _, part in one.groupby("cutoff"):
        bottom.plot(part["ds"], part[model], color="tab:blue", alpha=0.8)
    bottom.set_title(f"{uid}: forecasts from each cutoff (blue) against actuals", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return Path(path)

"""PNG figures for runs: fan charts (forecast, interval bands, actuals), loss curves, backtests. Uses matplotlib's object API
(no pyplot state, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from forecasting.core.columns import CUTOFF, ID, TARGET, TIME, Y_HAT


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
        top.plot(part[CUTOFF], part["mase"], marker="o", label=name)
    top.set_ylabel("MASE per cutoff")
    top.legend(fontsize=8)
    frame = bt.forecasts
    model = bt.metrics["predictor"].iloc[0]
    uid = frame[ID].iloc[0]
    one = frame[frame[ID] == uid]
    bottom.plot(one[TIME], one[TARGET], color="black", label="actual")
    for _, part in one.groupby(CUTOFF):
        bottom.plot(part[TIME], part[model], color="tab:blue", alpha=0.8)
    bottom.set_title(f"{uid}: forecasts from each cutoff (blue) against actuals", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=90)
    return Path(path)


def _fan_series(forecast, series, n_series: int) -> list:
    """The given series first (those present), then a fixed-seed sample of the others, n_series in all."""
    ids = list(dict.fromkeys(forecast[ID].tolist()))
    first = [s for s in (series or []) if s in ids]
    rest = [s for s in ids if s not in first]
    k = max(min(n_series - len(first), len(rest)), 0)
    pick = np.random.default_rng(0).choice(len(rest), size=k, replace=False) if k else []
    return first + [rest[i] for i in sorted(pick)]


def _fan_panel(ax, uid, past, fc, levels, actual, band_color: str = "tab:blue") -> None:
    """One series: history, bands (widest lightest, drawn first), forecast, actuals."""
    ax.plot(past[TIME], past[TARGET], color="black", lw=1, label="history")
    for i, lv in enumerate(sorted(levels, reverse=True)):
        alpha = 0.15 + 0.2 * i  # nested bands: the narrower the band, the darker
        ax.fill_between(fc[TIME], fc[f"y_hat-lo-{lv}"], fc[f"y_hat-hi-{lv}"], color=band_color, alpha=alpha,
                        lw=0, label=f"{lv}% interval")
    ax.plot(fc[TIME], fc[Y_HAT], color=band_color, lw=1.5, label="forecast")
    if actual is not None and len(actual):
        ax.plot(actual[TIME], actual[TARGET], color="tab:red", lw=1, ls="--", label="actual")
    ax.set_title(str(uid), fontsize=9)


def fan_figure(history, forecast, levels, actuals=None, series=None, n_series: int = 4,
               history_len: int | None = None, title: str = "") -> Figure:
    """The fan chart as a Figure (see `fan_chart`)."""
    import matplotlib.dates as mdates

    chosen = _fan_series(forecast, series, n_series)
    fig = Figure(figsize=(10, 2.8 * len(chosen)), layout="constrained")
    axes = fig.subplots(len(chosen), 1, squeeze=False)[:, 0]
    for ax, uid in zip(axes, chosen, strict=True):
        fc = forecast[forecast[ID] == uid].sort_values(TIME)
        n_past = history_len or 4 * len(fc)  # default: four horizons of context
        past = history[history[ID] == uid].sort_values(TIME).tail(n_past)
        act = None if actuals is None else actuals[(actuals[ID] == uid)
                                                   & actuals[TIME].isin(fc[TIME])].sort_values(TIME)
        _fan_panel(ax, uid, past, fc, levels, act)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    axes[0].legend(fontsize=8, ncols=3, loc="upper left")
    if title:
        fig.suptitle(title)
    return fig


def fan_chart(path: str | Path, history, forecast, levels, actuals=None, series=None, n_series: int = 4,
              history_len: int | None = None, title: str = "") -> Path:
    """For each chosen series (`series` first, then a sample of the others up to `n_series`): the last
    `history_len` rows of history (default four horizons), the forecast, a shaded band per level of
    `levels` (columns `y_hat-lo-<L>`/`y_hat-hi-<L>`; wider bands lighter) and the actuals where known,
    on real timestamps. `history`/`actuals`: long frames (unique_id, ds, y); `forecast`: unique_id, ds, y_hat."""
    fan_figure(history, forecast, levels, actuals, series, n_series, history_len, title).savefig(path, dpi=90)
    return Path(path)

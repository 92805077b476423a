"""Model shapes and parameter counts, the fit loop, and the Forecaster end to end."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from forecasting.api.forecaster import Forecaster, ForecasterConfig, build_panel, with_features
from forecasting.core.data import split_fractions
from forecasting.core.errors import DivergedError
from forecasting.core.evaluation import simple_predictors
from forecasting.core.features import calendar_features, n_calendar_features
from forecasting.core.scaling import SeriesScaler
from forecasting.core.training import TrainConfig, fit, predict
from forecasting.core.windows import Panel, make_windows
from forecasting.families.recurrent import ModelConfig, RecurrentForecaster, count_parameters

L, H = 48, 24


# --------------------------------------------------------------------------- model


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize(("lookback", "segment", "layers", "n_features"),
                         [(48, 1, 1, 1), (48, 4, 2, 3), (50, 8, 1, 2), (7, 7, 2, 1)])
def test_output_shape(cell, lookback, segment, layers, n_features):
    cfg = ModelConfig(cell=cell, lookback=lookback, horizon=H, n_features=n_features,
                      hidden=16, layers=layers, segment=segment)
    model = RecurrentForecaster(cfg)
    y = model(torch.randn(5, lookback, n_features))
    assert y.shape == (5, H) and y.dtype == torch.float32


@pytest.mark.parametrize(("cell", "gates"), [("gru", 3), ("lstm", 4)])
def test_count_parameters_one_layer(cell, gates):
    h, f, horizon = 16, 3, 12
    model = RecurrentForecaster(ModelConfig(cell=cell, lookback=24, horizon=horizon, n_features=f, hidden=h, layers=1))
    # Each gate: input weights h*f, recurrent weights h*h, two biases of h (PyTorch's layout); head h*H + H.
    expected = gates * (h * f + h * h + 2 * h) + h * horizon + horizon
    assert count_parameters(model) == expected
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_count_parameters_segment_embedding():
    h, f, seg, horizon = 8, 2, 4, 6
    model = RecurrentForecaster(ModelConfig(cell="gru", lookback=24, horizon=horizon, n_features=f, hidden=h,
                                            layers=1, segment=seg))
    embed = f * seg * h + h
    gru = 3 * (h * h + h * h + 2 * h)  # the cell reads the hidden-sized embedding
    assert count_parameters(model) == embed + gru + h * horizon + horizon
    for p in model.embed.parameters():
        p.requires_grad_(False)
    assert count_parameters(model) == gru + h * horizon + horizon  # trainable only


def test_model_config_validation():
    with pytest.raises(ValueError, match="cell"):
        ModelConfig(cell="transformer")
    with pytest.raises(ValueError, match="norm"):
        ModelConfig(norm="minmax")
    with pytest.raises(ValueError, match="segment"):
        ModelConfig(lookback=8, segment=9)
    with pytest.raises(ValueError, match="positive"):
        ModelConfig(hidden=0)


def zero_head(model: RecurrentForecaster, bias: float = 0.0) -> RecurrentForecaster:
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(bias)
    return model


def test_window_norm_is_added_back_to_the_output():
    x = torch.randn(3, 10, 1) * 4 + 7
    y = x[..., 0]
    for norm, expected in [
        ("none", torch.zeros(3, 1)),
        ("last", y[:, -1:]),
        ("mean", y.mean(1, keepdim=True)),
    ]:
        model = zero_head(RecurrentForecaster(ModelConfig(lookback=10, horizon=4, hidden=8, layers=1, norm=norm)))
        torch.testing.assert_close(model(x), expected.expand(3, 4))
    # "standard" multiplies the scale back: head bias 1 -> loc + scale.
    model = zero_head(RecurrentForecaster(ModelConfig(lookback=10, horizon=4, hidden=8, layers=1, norm="standard")),
                      bias=1.0)
    expected = y.mean(1, keepdim=True) + y.std(1, keepdim=True, unbiased=False)
    torch.testing.assert_close(model(x), expected.expand(3, 4))


def test_segment_drops_only_the_oldest_remainder():
    torch.manual_seed(0)
    model = RecurrentForecaster(ModelConfig(lookback=10, horizon=3, hidden=8, layers=1, segment=4, norm="none")).eval()
    x = torch.randn(2, 10, 1)
    x2 = x.clone()
    x2[:, :2] += 5.0  # the 10 mod 4 = 2 oldest steps are not read
    torch.testing.assert_close(model(x2), model(x))
    x3 = x.clone()
    x3[:, 2] += 5.0
    assert not torch.allclose(model(x3), model(x))


# --------------------------------------------------------------------------- features


def test_calendar_features():
    ds = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 06:00", "2024-01-03 18:00"])  # Monday, Monday, Wednesday
    f = calendar_features(ds, "h")
    assert f.shape == (3, 4) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, 0], [0, 1, -1], atol=1e-6)  # sin of the hour of day
    np.testing.assert_allclose(f[:, 1], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(f[:, 2], [0, 0, np.sin(4 * np.pi / 7)], atol=1e-6)  # day of week
    assert calendar_features(ds, "D").shape == (3, 2)
    assert (n_calendar_features("h"), n_calendar_features("15min"), n_calendar_features("D"),
            n_calendar_features("W"), n_calendar_features("MS")) == (4, 4, 2, 0, 0)


def test_with_features_sets_input_width():
    cfg = ForecasterConfig(model=ModelConfig(n_features=1), freq="h", calendar=True, covariates=("temp",))
    assert with_features(cfg).model.n_features == 1 + 1 + 4
    assert with_features(replace(cfg, calendar=False, covariates=())).model.n_features == 1


# --------------------------------------------------------------------------- fit loop


def train_cfg(**kw) -> TrainConfig:
    base = dict(lr=5e-3, batch_size=64, max_epochs=10, patience=3, device="cpu", max_train_windows=1024, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def forecaster_cfg(cell: str = "gru", **train) -> ForecasterConfig:
    return ForecasterConfig(
        model=ModelConfig(cell=cell, lookback=L, horizon=H, hidden=32, layers=1, segment=4, norm="mean"),
        train=train_cfg(**train), freq="h", calendar=True,
    )


@pytest.fixture(scope="module")
def sines(make_sine_frame):
    df = make_sine_frame(n_series=5, length=24 * 30, period=24, noise=0.3, trend=0.003, seed=1)
    split = split_fractions(df.groupby("unique_id").size(), val=0.15, test=0.2)
    return df, split


@pytest.fixture(scope="module")
def gru(sines):
    df, split = sines
    f = Forecaster(forecaster_cfg("gru"))
    f.fit(df, split)
    return f


def scaled_windows(panel: Panel, split, lookback=L, horizon=H):
    scaled = SeriesScaler.fit(panel, split.train_end).transform(panel)
    return (make_windows(scaled, lookback, horizon, split, "train"),
            make_windows(scaled, lookback, horizon, split, "val"))


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_beats_seasonal_naive_on_noisy_sines(sines, gru, cell):
    df, split = sines
    if cell == "gru":
        f = gru
    else:
        f = Forecaster(forecaster_cfg(cell))
        f.fit(df, split)
    ev = f.evaluate(df, split, "test")
    sn = f.evaluate(df, split, "test", predictor=simple_predictors(H, (f.cfg.period,))[1])
    np.testing.assert_allclose(ev.y, sn.y, rtol=1e-5)  # the same targets
    assert ev.y.shape == (5 * (144 - H + 1), H)
    assert ev.metrics["mse"] <= 0.8 * sn.metrics["mse"], (ev.metrics, sn.metrics)
    assert ev.metrics["mase"] < sn.metrics["mase"]
    # Seasonal naive of a sine with noise sd 0.3 has MSE about 2 * 0.09 (plus a little trend).
    assert 0.12 < sn.metrics["mse"] < 0.3
    assert set(ev.metrics) >= {"mae", "mse", "rmse", "smape", "mase", "mse_std", "mae_std"}
    assert ev.metrics["rmse"] == pytest.approx(math.sqrt(ev.metrics["mse"]))


@pytest.mark.slow
def test_same_seed_same_data_gives_identical_results(sines, gru):
    df, split = sines
    torch.manual_seed(1234)  # global RNG state differs from the one before `gru` was fit
    np.random.seed(99)
    again = Forecaster(forecaster_cfg("gru"))
    again.fit(df, split)
    assert again.fit_result_.history == gru.fit_result_.history
    assert again.evaluate(df, split, "test").metrics == gru.evaluate(df, split, "test").metrics
    for a, b in zip(again.model_.state_dict().values(), gru.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = Forecaster(forecaster_cfg("gru", seed=1))
    other.fit(df, split)
    assert other.fit_result_.history != gru.fit_result_.history


@pytest.mark.slow
def test_nan_in_training_data_raises_diverged(sines):
    df, split = sines
    panel = build_panel(df, with_features(forecaster_cfg()))
    values = panel.values.copy()
    values[30, 0] = np.nan  # a training row of the first series
    train = make_windows(replace(panel, values=values), L, H, split, "train")
    model = RecurrentForecaster(with_features(forecaster_cfg()).model)
    with pytest.raises(DivergedError, match="nan"):
        fit(model, train, None, train_cfg(max_epochs=2))
    bad = df.copy()
    bad.loc[100, "y"] = np.nan
    with pytest.raises(DivergedError):
        Forecaster(forecaster_cfg(max_epochs=2)).fit(bad, split)


@pytest.mark.slow
def test_early_stopping_restores_best_weights(sines):
    df, split = sines
    cfg = with_features(forecaster_cfg())
    panel = build_panel(df, cfg)
    train, _ = scaled_windows(panel, split)
    # A validation set whose targets are the negated true continuation: the better the model
    # learns the sines, the worse it does here, so the best epoch is an early one.
    x, y = make_windows(train.panel, L, H, split, "test", stride=24).arrays()
    w = np.concatenate([x, np.concatenate([-y[..., None], x[:, :H, 1:]], axis=2)], axis=1)  # [N, L+H, F]
    vpanel = Panel(tuple(f"v{i}" for i in range(len(w))), np.ascontiguousarray(w.reshape(-1, w.shape[2])),
                   np.arange(len(w) + 1) * (L + H), tuple(pd.Timestamp(0) for _ in w), "h", panel.columns)
    val = make_windows(vpanel, L, H)
    assert len(val) == len(w)
    patience = 2
    torch.manual_seed(0)
    model = RecurrentForecaster(cfg.model)
    seen = []
    res = fit(model, train, val, train_cfg(max_epochs=15, patience=patience),
              callback=lambda e, tl, vl: seen.append((e, tl, vl)))
    vals = [h["val_loss"] for h in res.history]
    assert res.best_val_loss == min(vals)
    assert res.best_epoch == int(np.argmin(vals))
    assert res.best_epoch < len(vals) - 1  # the last epoch was not the best...
    assert len(vals) == res.best_epoch + patience + 2 < 15  # ...and training stopped early
    assert seen == [(h["epoch"], h["train_loss"], h["val_loss"]) for h in res.history]
    # The model now holds the best epoch's weights: its validation MSE, computed independently, is the best.
    vx, vy = val.arrays()
    mse_now = float(np.mean((predict(model, vx, "cpu") - vy) ** 2))
    assert mse_now == pytest.approx(res.best_val_loss, rel=1e-5)
    assert mse_now != pytest.approx(vals[-1], rel=1e-3)


@pytest.mark.slow
def test_callback_can_stop_training(sines):
    df, split = sines
    cfg = with_features(forecaster_cfg())
    train, val = scaled_windows(build_panel(df, cfg), split)

    class Prune(Exception):
        pass

    def cb(epoch, train_loss, val_loss):
        if epoch == 1:
            raise Prune

    t0 = time.perf_counter()
    with pytest.raises(Prune) as stopped:
        fit(RecurrentForecaster(cfg.model), train, val, train_cfg(), callback=cb)
    # The stopped fit's two epochs are accounted for: seconds inside this call, more than none.
    assert 0 < stopped.value.fit_seconds <= time.perf_counter() - t0
    with pytest.raises(ValueError, match="no training windows"):
        fit(RecurrentForecaster(cfg.model), make_windows(train.panel, 10_000, H), val, train_cfg())


# --------------------------------------------------------------------------- forecaster


@pytest.mark.slow
def test_save_load_round_trip(sines, gru, tmp_path):
    df, split = sines
    gru.save(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "weights.pt", "scaler.json"}
    back = Forecaster.load(tmp_path / "m")
    assert back.cfg == gru.cfg
    np.testing.assert_array_equal(back.scaler_.mean, gru.scaler_.mean)
    np.testing.assert_array_equal(back.mase_scale_, gru.mase_scale_)
    a, b = gru.evaluate(df, split, "test"), back.evaluate(df, split, "test")
    np.testing.assert_array_equal(a.y_hat, b.y_hat)
    assert a.metrics == b.metrics
    pa, _ = gru.predict(df)
    pb, _ = back.predict(df)
    pd.testing.assert_frame_equal(pa, pb)
    assert back.n_parameters == gru.n_parameters > 0


@pytest.mark.slow
def test_predict_future_rows_and_skipped(sines, gru):
    df, _ = sines
    short = pd.DataFrame({"unique_id": "tiny", "ds": pd.date_range("2021-03-01", periods=10, freq="h"), "y": 1.0})
    history = pd.concat([df, short], ignore_index=True).sample(frac=1.0, random_state=0)  # order must not matter
    out, skipped = gru.predict(history)
    assert list(out.columns) == ["unique_id", "ds", "y_hat"]
    assert skipped == [("tiny", "10 points, needs lookback 48")]
    assert out["unique_id"].value_counts().to_dict() == {f"s{i}": H for i in range(5)}
    for uid, g in out.groupby("unique_id"):
        last = df.loc[df["unique_id"] == uid, "ds"].max()
        assert g["ds"].tolist() == list(pd.date_range(last + pd.Timedelta(hours=1), periods=H, freq="h"))
    assert np.isfinite(out["y_hat"]).all()
    ordered, _ = gru.predict(df)  # rows already grouped by series in time order: the one-pass path
    key = ["unique_id", "ds"]
    pd.testing.assert_frame_equal(out.sort_values(key, ignore_index=True), ordered.sort_values(key, ignore_index=True))
    # Every series too short: an empty forecast and every series listed.
    out, skipped = gru.predict(df.groupby("unique_id").head(10))
    assert len(out) == 0 and [s[0] for s in skipped] == [f"s{i}" for i in range(5)]


@pytest.mark.slow
def test_predict_skips_series_with_gaps_in_lookback(sines, gru):
    df, _ = sines
    s0 = df[df["unique_id"] == "s0"]
    holed = pd.concat([s0.drop(s0.index[-5]), df[df["unique_id"] == "s1"]])
    out, skipped = gru.predict(holed)
    assert [s[0] for s in skipped] == ["s0"] and "gaps" in skipped[0][1]
    assert out["unique_id"].unique().tolist() == ["s1"]


@pytest.mark.slow
def test_predict_matches_evaluate_on_the_same_window(sines, gru):
    # Forecasting from a history that ends where an evaluation window's input ends must give
    # that window's forecast: same scaling, same calendar features, same model.
    df, split = sines
    ev = gru.evaluate(df, split, "test")
    w = gru.windows(df, split, "test")
    for k in (0, len(w) // 2, len(w) - 1):
        s = int(w.series_index[k])
        end = int(w.starts[k] - w.panel.offsets[s]) + L
        hist = df[df["unique_id"] == w.panel.ids[s]].iloc[:end]
        out, skipped = gru.predict(hist)
        assert skipped == []
        np.testing.assert_allclose(out["y_hat"].to_numpy(), ev.y_hat[k], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_predict_new_series_uses_its_own_statistics(sines, gru):
    df, _ = sines
    s0 = df[df["unique_id"] == "s0"]
    renamed = s0.assign(unique_id="brand_new")
    scaled = s0.assign(unique_id="brand_new_scaled", y=10.0 * s0["y"] + 100.0)
    out, skipped = gru.predict(pd.concat([renamed, scaled]))
    assert skipped == []
    a = out[out.unique_id == "brand_new"]["y_hat"].to_numpy()
    b = out[out.unique_id == "brand_new_scaled"]["y_hat"].to_numpy()
    # Standardized with its own mean and std, the scaled copy feeds the model the same inputs,
    # so its forecast is the same affine map of the original's (the model itself is not scale-equivariant).
    np.testing.assert_allclose(b, 10.0 * a + 100.0, rtol=1e-5)


def test_peak_memory_is_what_the_block_allocates_not_process_growth():
    """A block that allocates 200 MB reports about 200 MB, and the same block again reports the same:
    memory the process kept from the first does not hide the second (issue: the second fit read 0)."""
    import time

    from forecasting.core.training import PeakMemory

    if PeakMemory._info is None:
        pytest.skip("needs glibc mallinfo2")
    readings = []
    for _ in range(2):
        with PeakMemory(torch.device("cpu")) as mem:
            block = np.ones(200 * 2**20 // 8)  # 200 MB
            time.sleep(0.1)
            del block
        readings.append(mem.peak_mb)
    for r in readings:
        assert 190 < r < 260, readings


def test_successive_fits_report_their_own_peak(make_sine_frame):
    """Two identical fits, large enough for the 5 ms sampler to see their working set, report about
    the same peak (the second once read ~0: memory the first had freed was still resident)."""
    df = make_sine_frame(n_series=4, length=1500, seed=0)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.1, 0.2)
    cfg = ForecasterConfig(model=ModelConfig(lookback=96, horizon=24, hidden=64, layers=2),
                           train=TrainConfig(max_epochs=1, device="cpu", batch_size=512), calendar=False)
    peaks = [Forecaster(cfg).fit(df, split).peak_memory_mb for _ in range(2)]
    assert peaks[0] > 10 and peaks[1] > 10 and 0.5 < peaks[1] / peaks[0] < 2.0, peaks


# --------------------------------------------------------------------------- the MASE-scaled loss


class ConstantModel(torch.nn.Module):
    """Forecasts one learnt constant b at every step: y_hat [B, H] = b."""

    def __init__(self, horizon: int, b: float = 0.0):
        super().__init__()
        self.horizon, self.b = horizon, torch.nn.Parameter(torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b.expand(x.shape[0], self.horizon)


def two_level_panel(lengths=(40, 40), levels=(1.0, -1.0)) -> Panel:
    """Two series, each constant at its level: every window's targets equal that level."""
    values = np.concatenate([np.full((n, 1), v, np.float32) for n, v in zip(lengths, levels, strict=True)])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Panel(("a", "b"), values, offsets, (pd.Timestamp(0),) * 2, "h", ("y",))


def test_mase_loss_is_the_error_weighted_per_series_by_hand():
    panel = two_level_panel(lengths=(30, 50), levels=(2.0, -1.0))
    train = make_windows(panel, 4, 3)
    weights = np.array([3.0, 0.5])  # MASE units per unit of the values, per series
    cfg = train_cfg(loss="mase", lr=0.0, batch_size=10_000, max_epochs=1, max_train_windows=None)
    res = fit(ConstantModel(3, b=0.5), train, None, cfg, weights=weights)
    # By hand: |2 - 0.5| = 1.5 on a's windows, |-1 - 0.5| = 1.5 on b's, weights scaled to mean 1.
    n_a, n_b = 30 - 7 + 1, 50 - 7 + 1
    w = np.repeat(weights, [n_a, n_b])
    expected = np.mean(w / w.mean() * np.repeat([1.5, 1.5], [n_a, n_b]))
    assert res.history[0]["train_loss"] == pytest.approx(expected, rel=1e-6)
    mae = fit(ConstantModel(3, b=0.5), train, None, replace(cfg, loss="mae")).history[0]["train_loss"]
    assert mae == pytest.approx(1.5, rel=1e-6)
    with pytest.raises(ValueError, match="per-series weights"):
        fit(ConstantModel(3), train, None, cfg)


def test_mase_loss_moves_the_optimum_to_the_weighted_median():
    # Equal numbers of windows at +1 and -1: any constant in [-1, 1] minimizes the plain absolute
    # error, but with series a weighted 3 to 1 the weighted absolute error is lowest only at +1.
    train = make_windows(two_level_panel(), 4, 3)
    cfg = train_cfg(loss="mase", lr=0.05, batch_size=1_000, max_epochs=80, max_train_windows=None, patience=100)
    model = ConstantModel(3)
    fit(model, train, None, cfg, weights=np.array([3.0, 1.0]))
    assert model.b.item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="val_metric"):
        TrainConfig(val_metric="mase")


def test_forecaster_mase_weights_are_std_over_the_seasonal_naive_mae(sines):
    df, split = sines
    f = Forecaster(forecaster_cfg())
    f.fit_scaler(df, split)
    for i, (_, g) in enumerate(df.groupby("unique_id", sort=False)):
        y = g["y"].to_numpy()[: int(split.train_end[i])]
        snaive_mae = np.mean([abs(y[t] - y[t - 24]) for t in range(24, len(y))])  # a naive loop
        assert f.mase_weights()[i] == pytest.approx(np.std(y) / snaive_mae, rel=1e-4)

"""Speed benchmark: ratios measured in one run.

(a) windowing: `forecasting.core.windows` against a plain Python loop over the same series, and the
    memory of the zero-copy window view against the input;
(b) training: one epoch of `forecasting.core.training.fit` against a bare PyTorch loop over the same
    model, the same pre-gathered tensors and batch size (the floor);
(c) batch forecasting through a registered pyfunc model (`models:/<name>@champion` from a
    temporary SQLite MLflow store): series per second;
(d) peers, NeuralForecast and Darts, each installed into its own virtualenv
    `benchmarks/.venv-peers-<name>` with torch pinned, on ETTh1-OT, two separate questions:
    (d1) library overhead: the same step-by-step GRU (same configuration, data, batch size and
    epochs) in each library: windows/s and test MSE;
    (d2) each library's own default configuration against this pipeline's default: accuracy
    reached, time taken, and when ours first matched the peer's accuracy. Different
    architectures, so no speed verdict is drawn from it.

    python benchmarks/speed.py [--quick] [--out DIR] [--data-dir DIR] [--peers install|existing|skip]
                               [--peer-venvs DIR]
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from forecasting.api.forecaster import Forecaster, ForecasterConfig  # noqa: E402
from forecasting.api.jobs import TrainJob  # noqa: E402
from forecasting.core.data import IngestConfig, to_long  # noqa: E402
from forecasting.core.scaling import SeriesScaler  # noqa: E402
from forecasting.core.training import TrainConfig, fit, predict  # noqa: E402
from forecasting.core.windows import make_windows, panel_from_long  # noqa: E402
from forecasting.families.recurrent import ModelConfig, RecurrentForecaster  # noqa: E402
from forecasting.pipeline.steps import base_config, search_space  # noqa: E402
from forecasting.tuning.space import apply_params, starting_point  # noqa: E402
from forecasting.tuning.study import TuneConfig  # noqa: E402

NAME = "speed"
PEERS = {"neuralforecast": "neuralforecast==3.3.0", "darts": "darts[torch]==0.48.1"}
TORCH_PIN = "torch==2.13.0"
WORKER = Path(__file__).with_name("peer_worker.py")
# The GRU every library trains in the library-overhead runs (d1): step by step (segment 1).
SAME = {"lookback": 96, "horizon": 24, "hidden": 64, "layers": 2, "batch_size": 256, "lr": 1e-3, "clip": 1.0,
        "norm": "standard"}
GOALS = {"windowing_speedup": 100.0, "training_overhead": 1.15, "batch_seconds": 10.0, "peer_speedup": 5.0}


# --------------------------------------------------------------------------- (a) windowing


def loop_windows(series: list[np.ndarray], L: int, H: int) -> tuple[np.ndarray, np.ndarray]:
    """The plain way: a Python loop over every series and start, slices stacked at the end."""
    xs, ys = [], []
    for values in series:
        for s in range(len(values) - L - H + 1):
            xs.append(values[s:s + L])
            ys.append(values[s + L:s + L + H, 0])
    return np.stack(xs), np.stack(ys)


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def traced_peak(fn) -> tuple[int, object]:
    """Peak bytes numpy/Python allocate while `fn` runs (tracemalloc sees numpy's buffers)."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak, out


def bench_windowing(data_dir: Path, quick: bool) -> dict:
    rows = 2000 if quick else None
    (path,) = C.require(data_dir, "ett/ETTh1.csv")
    raw = pd.read_csv(path, nrows=rows)
    df = to_long(raw, IngestConfig(format="wide", time_col="date")).drop(columns="_row")
    df["ds"] = pd.to_datetime(df["ds"])
    df = df.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    panel = panel_from_long(df, "h")
    L, H = 96, 24
    series = [panel.series(i) for i in range(len(panel.ids))]
    repeats = 2 if quick else 5

    t_loop, (x_loop, y_loop) = best_of(lambda: loop_windows(series, L, H), repeats)
    t_copy, (x, y) = best_of(lambda: make_windows(panel, L, H).arrays(), repeats)
    assert np.array_equal(x, x_loop) and np.array_equal(y, y_loop), "windows differ from the loop"

    def view():
        w = make_windows(panel, L, H)
        return w, w.view()

    t_view, (w, v) = best_of(view, repeats)
    assert np.shares_memory(v, panel.values), "the window view copied the data"
    np.testing.assert_array_equal(v[w.starts][:, :L], x)
    peak_view, _ = traced_peak(view)
    peak_copy, _ = traced_peak(lambda: make_windows(panel, L, H).arrays())
    peak_loop, _ = traced_peak(lambda: loop_windows(series, L, H))
    input_bytes = panel.values.nbytes
    del x_loop, y_loop, x, y
    return {
        "data": f"ETTh1, {len(panel.ids)} columns as series x {int(panel.lengths[0]):,} rows",
        "lookback": L, "horizon": H, "n_series": len(panel.ids), "n_windows": len(w),
        "repeats": repeats, "timing": "best of repeats",
        "loop_seconds": t_loop, "arrays_seconds": t_copy, "view_seconds": t_view,
        "speedup_arrays": t_loop / t_copy, "speedup_view": t_loop / t_view,
        "identical_to_loop": True, "view_shares_memory_with_input": True,
        "input_bytes": input_bytes, "view_peak_bytes": peak_view, "arrays_peak_bytes": peak_copy,
        "loop_peak_bytes": peak_loop,
        "view_peak_over_input": peak_view / input_bytes, "arrays_peak_over_input": peak_copy / input_bytes,
        "loop_peak_over_input": peak_loop / input_bytes,
    }


# --------------------------------------------------------------------------- (b) training epoch


def etth1_windows(data_dir: Path, quick: bool, lookback: int = 96, horizon: int = 24):
    borders = C.ETTH1_QUICK_BORDERS if quick else C.ETTH1_BORDERS
    df = C.etth1_frame(data_dir, borders[2])
    split = C.etth1_split(borders)
    panel = panel_from_long(df, "h")
    scaled = SeriesScaler.fit(panel, split.train_end).transform(panel)
    return make_windows(scaled, lookback, horizon, split, "train")


def bare_epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float, clip: float,
               seed: int) -> None:
    """The floor: pre-gathered tensors, shuffled index batches, AdamW, MSE, clipping; nothing else."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    model.train()
    for i in range(0, len(order), batch):
        idx = order[i:i + batch]
        loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of one call of `fn`."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def epoch_times(init: torch.nn.Module, train, x: torch.Tensor, y: torch.Tensor, tcfg: TrainConfig,
                repeats: int) -> dict[str, list[float]]:
    """Wall and CPU seconds of one epoch of `fit` and of the bare loop, each from a copy of the same
    initial weights; after one warm-up of each (first calls initialise kernels and allocator pools),
    `repeats` rounds interleaved, so both see the same background load."""

    def run_fit() -> tuple[float, float]:
        model = copy.deepcopy(init)
        return timed(lambda: fit(model, train, None, tcfg))

    def run_bare() -> tuple[float, float]:
        model = copy.deepcopy(init)
        return timed(lambda: bare_epoch(model, x, y, tcfg.batch_size, tcfg.lr, tcfg.clip, tcfg.seed))

    run_fit(), run_bare()
    out = {"fit_seconds": [], "bare_seconds": [], "fit_cpu_seconds": [], "bare_cpu_seconds": []}
    for _ in range(repeats):
        (fw, fc), (bw, bc) = run_fit(), run_bare()
        for key, v in (("fit_seconds", fw), ("bare_seconds", bw), ("fit_cpu_seconds", fc), ("bare_cpu_seconds", bc)):
            out[key].append(v)
    return out


def bench_training(data_dir: Path, quick: bool, seed: int) -> dict:
    """(b) One epoch of `forecasting.core.training.fit` against the bare PyTorch loop (the floor)."""
    train = etth1_windows(data_dir, quick)
    xa, ya = train.arrays()
    x, y = torch.from_numpy(np.ascontiguousarray(xa)), torch.from_numpy(np.ascontiguousarray(ya))
    mcfg = ModelConfig(cell="gru", lookback=96, horizon=24, hidden=64, layers=2, norm="last", segment=1)
    tcfg = TrainConfig(lr=1e-3, batch_size=256, max_epochs=1, patience=1, clip=1.0, seed=seed, device="cpu")
    torch.manual_seed(seed)
    init = RecurrentForecaster(mcfg)
    repeats = 1 if quick else 5
    t = epoch_times(init, train, x, y, tcfg, repeats)
    fit_t, bare_t, fit_c, bare_c = t["fit_seconds"], t["bare_seconds"], t["fit_cpu_seconds"], t["bare_cpu_seconds"]
    paired = [f / b for f, b in zip(fit_t, bare_t, strict=True)]
    return {
        "data": "ETTh1-OT training windows (standardized with training statistics)",
        "model": {"cell": "gru", "lookback": 96, "horizon": 24, "hidden": 64, "layers": 2, "segment": 1,
                  "norm": "last"},
        "batch_size": tcfg.batch_size, "n_windows": len(train), "repeats": repeats, **t,
        "fit_best": min(fit_t), "bare_best": min(bare_t),
        "ratio_best": min(fit_t) / min(bare_t), "ratio_median_paired": statistics.median(paired),
        "ratio_cpu_best": min(fit_c) / min(bare_c),
        "floor": "same model and initial weights, AdamW lr 1e-3, MSE, clip_grad_norm 1.0, same shuffled "
                 "batches of 256 from tensors gathered once before timing",
        "fit_includes": "zero-copy unfold view, per-batch gather, loss accumulation, epoch bookkeeping, "
                        "best-weights copy, peak-memory sampler thread",
    }


# --------------------------------------------------------------------------- (c) batch forecasting


def synthetic_panel(n_series: int, length: int, seed: int) -> pd.DataFrame:
    """Daily-seasonal noisy series with random level, amplitude, phase and trend (hourly)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)[None, :]
    level = rng.uniform(10, 100, (n_series, 1))
    amp = rng.uniform(1, 10, (n_series, 1))
    phase = rng.uniform(0, 2 * np.pi, (n_series, 1))
    trend = rng.normal(0, 0.02, (n_series, 1))
    y = level + amp * np.sin(2 * np.pi * t / 24 + phase) + trend * t + rng.normal(0, 1, (n_series, length))
    start = pd.Timestamp("2024-01-01")
    ds = pd.date_range(start, periods=length, freq="h")
    return pd.DataFrame({
        "unique_id": np.repeat([f"s{i:05d}" for i in range(n_series)], length),
        "ds": np.tile(ds.to_numpy(), n_series),
        "y": y.reshape(-1),
    })


BATCH_SEGMENTS = (1, 24)  # the plain step-by-step GRU and the season-long segmented one


@contextmanager
def scratch_mlflow_home() -> Iterator[str]:
    """A temporary folder for an MLflow store, with MLflow's logging and warnings quiet. A tracking
    URI from the environment is set aside while inside (so the store really is the temporary one)
    and put back afterwards."""
    saved_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    with tempfile.TemporaryDirectory() as home, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield home
        finally:
            if saved_uri is not None:
                os.environ["MLFLOW_TRACKING_URI"] = saved_uri


def batch_config(segment: int, lookback: int, horizon: int, seed: int) -> ForecasterConfig:
    """The GRU the batch benchmark serves: hidden 64 x 2 with calendar features, one short epoch."""
    return ForecasterConfig(
        model=ModelConfig(cell="gru", lookback=lookback, horizon=horizon, hidden=64, layers=2, norm="last",
                          segment=segment),
        train=TrainConfig(max_epochs=1, max_train_windows=2048, batch_size=256, seed=seed, device="cpu"),
        freq="h", calendar=True,
    )


def register_and_load(exp: str, df: pd.DataFrame, split, cfg: ForecasterConfig) -> tuple[object, dict]:
    """Fit `cfg`, log and register the model, and load it back as `models:/<name>@champion`;
    returns the loaded pyfunc model and its record (train and load seconds, empty predict lists)."""
    import mlflow

    from forecasting.tracking import registry, runs

    segment = cfg.model.segment
    f = Forecaster(cfg)
    t0 = time.perf_counter()
    f.fit(df, split)
    fit_seconds = time.perf_counter() - t0
    name = f"bench-speed-gru-seg{segment}"
    run_id = runs.start_run(exp, f"speed-batch-seg{segment}")
    reg = registry.register(registry.log_model(run_id, f, registry.input_example(df, cfg.model.lookback)), name,
                            "mase", 1.0)
    runs.end_run(run_id)
    t0 = time.perf_counter()
    # What `forecasting forecast` runs: the forecaster inside the registered pyfunc model.
    model = mlflow.pyfunc.load_model(f"models:/{name}@{reg['alias']}").unwrap_python_model().forecaster
    return model, {"model_uri": f"models:/{name}@{reg['alias']}", "train_seconds": fit_seconds,
                   "load_seconds": time.perf_counter() - t0, "predict_seconds": [], "predict_cpu_seconds": []}


def time_predictions(models: dict[int, object], out: dict[str, dict], df: pd.DataFrame, horizon: int,
                     repeats: int) -> None:
    """Append each model's wall and CPU seconds of forecasting every series in `df` to its record in
    `out`; the repeats are interleaved (every model once per round), so load drift hits all alike."""
    from forecasting.api.batch import forecast_with

    n_series = df["unique_id"].nunique()
    for _ in range(repeats):
        for segment, model in models.items():
            gc.collect()
            c0 = time.process_time()
            result = forecast_with(model, df)
            r = out[f"segment{segment}"]
            r["predict_cpu_seconds"].append(time.process_time() - c0)
            r["predict_seconds"].append(result.seconds)
            assert result.n_forecast == n_series and not result.skipped, "batch forecast skipped series"
            assert len(result.forecasts) == n_series * horizon


def bench_batch(quick: bool, seed: int) -> dict:
    """Series per second through registered pyfunc models: the plain GRU (segment 1) and the
    segmented one (segment 24), each logged, registered and loaded as `models:/<name>@champion`."""
    from forecasting.core.data import split_fractions
    from forecasting.tracking import runs

    n_series, length, L, H = (200 if quick else 10_000), 240, 168, 24
    df = synthetic_panel(n_series, length, seed)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), val=0.1, test=0.0)
    models, out = {}, {}
    with scratch_mlflow_home() as home:
        uri = runs.configure(home)
        exp = runs.ensure_experiment("bench-speed", home)
        for segment in BATCH_SEGMENTS:
            models[segment], out[f"segment{segment}"] = register_and_load(exp, df, split,
                                                                          batch_config(segment, L, H, seed))
        time_predictions(models, out, df, H, 2 if quick else 3)
    for r in out.values():
        r["predict_best"] = min(r["predict_seconds"])
        r["predict_cpu_best"] = min(r["predict_cpu_seconds"])
        r["series_per_second"] = n_series / r["predict_best"]
    return {
        "store": "temporary SQLite MLflow store; pyfunc logged with forecasting.tracking.registry.log_model, registered, "
                 "loaded as models:/<name>@champion",
        "tracking_uri_scheme": uri.split(":", 1)[0],
        "n_series": n_series, "history_rows_per_series": length, "lookback": L, "horizon": H,
        "model": {"cell": "gru", "hidden": 64, "layers": 2, "calendar": True, "segments": list(BATCH_SEGMENTS)},
        "history_rows": len(df), "models": out,
        "includes": "pyfunc schema check, sorting and grouping the long history, per-series "
                    "standardization, calendar features, GRU forward, output frame",
    }


# --------------------------------------------------------------------------- (d) peers


PEER_VENVS = C.REPO / "benchmarks"


def peer_python(name: str, root: Path = PEER_VENVS) -> Path:
    """The interpreter of `<root>/.venv-peers-<name>`."""
    return Path(root) / f".venv-peers-{name}" / "bin" / "python"


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


def ensure_peer(name: str, mode: str, root: Path = PEER_VENVS) -> dict:
    """Make sure `.venv-peers-<name>` has the library; install it there (torch pinned) if allowed."""
    py = peer_python(name, root)
    check = [str(py), "-c", f"import {name}, torch; print({name}.__version__, torch.__version__)"]
    if py.exists():
        ok = subprocess.run(check, capture_output=True, text=True)
        if ok.returncode == 0:
            lib, tv = ok.stdout.split()[-2:]
            return {"status": "ok", "installed_now": False, "version": lib, "torch": tv, "python": str(py)}
    if mode != "install":
        return {"status": "not installed", "reason": f"{py.parent.parent} is missing or broken and --peers {mode}"}
    venv = py.parent.parent
    print(f"[speed] installing {PEERS[name]} into {venv} (torch pinned: {TORCH_PIN}) ...", file=sys.stderr, flush=True)
    steps = [[sys.executable, "-m", "venv", str(venv)]]
    constraints = venv / "constraints.txt"
    steps.append([str(py), "-m", "pip", "install", "-q", "-c", str(constraints), PEERS[name]])
    t0 = time.perf_counter()
    for i, cmd in enumerate(steps):
        if i == 1:
            constraints.write_text(TORCH_PIN + "\n")
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            return {"status": "install failed", "reason": f"timed out: {' '.join(cmd)}"}
        if r.returncode != 0:
            return {"status": "install failed", "reason": f"{' '.join(cmd)} exited {r.returncode}: "
                                                          f"{_tail(r.stderr or r.stdout)}"}
    ok = subprocess.run(check, capture_output=True, text=True)
    if ok.returncode != 0:
        return {"status": "install failed", "reason": f"import check failed: {_tail(ok.stderr)}"}
    lib, tv = ok.stdout.split()[-2:]
    return {"status": "ok", "installed_now": True, "install_seconds": time.perf_counter() - t0,
            "version": lib, "torch": tv, "python": str(py)}


def run_peer(name: str, config: str, args, borders, epochs: int) -> dict:
    """One peer_worker.py run inside the peer's virtualenv; its JSON line, or why there is none."""
    (csv,) = C.require(args.data_dir, "ett/ETTh1.csv")
    s, threads, quick = SAME, args.threads, args.quick
    cmd = [str(peer_python(name, args.peer_venvs)), str(WORKER), "--library", name, "--config", config,
           "--csv", str(csv), "--borders", *map(str, borders), "--epochs", str(epochs),
           "--lookback", str(s["lookback"]), "--horizon", str(s["horizon"]), "--hidden", str(s["hidden"]),
           "--layers", str(s["layers"]), "--batch-size", str(s["batch_size"]), "--lr", str(s["lr"]),
           "--clip", str(s["clip"]), "--threads", str(threads), "--seed", str(args.seed),
           *(["--quick"] if quick else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
    timeout = 300 if quick else 1800
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"timed out after {timeout} s"}
    if r.returncode != 0:
        return {"status": "failed", "reason": f"worker exited {r.returncode}: {_tail(r.stderr, 2500)}"}
    return {"status": "ok", **json.loads(r.stdout.strip().splitlines()[-1])}


def ours_config(kind: str, epochs: int, seed: int, quick: bool, df: pd.DataFrame, split) -> ForecasterConfig:
    """`same`: the GRU shared with the peers' same-config runs (step by step, segment 1);
    `default`: what the training pipeline starts its search from for this data (its base
    configuration and the first trial of its default search space), lookback capped at the
    peers' input size, univariate like the peers (no calendar features)."""
    s = SAME
    if kind == "same":
        return ForecasterConfig(
            model=ModelConfig(cell="gru", lookback=s["lookback"], horizon=s["horizon"], hidden=s["hidden"],
                              layers=s["layers"], norm=s["norm"], segment=1),
            train=TrainConfig(lr=s["lr"], batch_size=s["batch_size"], max_epochs=epochs, patience=epochs,
                              clip=s["clip"], seed=seed, device="cpu"),
            freq="h", calendar=False)
    job = TrainJob(dataset="etth1-ot", horizon=s["horizon"], calendar=False, max_lookback=s["lookback"], seed=seed,
                   device="cpu", **({"tune": TuneConfig(max_epochs=2)} if quick else {}))
    base = base_config(df, "h", job, split)
    params = starting_point(search_space(df, split, base, job), "gru")
    return apply_params(base, params, "gru")


class TestCurve:
    """Epoch callback recording the test MSE after every epoch while a Forecaster trains: a
    measurement only (nothing is selected on it), its own time kept apart from the training time."""

    def __init__(self, f: Forecaster, df: pd.DataFrame, split) -> None:
        self.f, self.df, self.split = f, df, split
        self.x = self.y = None
        self.start, self.seconds, self.points = time.perf_counter(), 0.0, []

    def __call__(self, epoch: int, train_loss: float, val_loss: float) -> None:
        t = time.perf_counter()
        if self.x is None:
            self.x, self.y = self.f.windows(self.df, self.split, "test").arrays()
        y_hat = predict(self.f.model_, self.x, "cpu")
        self.points.append({"epoch": epoch + 1, "seconds": t - self.start - self.seconds,
                            "test_mse_std": float(np.mean((y_hat - self.y) ** 2))})
        self.seconds += time.perf_counter() - t


def ours_run(df: pd.DataFrame, split, cfg: ForecasterConfig, kind: str, curve: bool = False) -> dict:
    """This pipeline on the peers' protocol: fit on the training rows only (no validation part),
    evaluate every test window; with `curve`, the test MSE after every epoch as well."""
    no_val = replace(split, val_end=split.train_end)
    f = Forecaster(cfg)
    tracker = TestCurve(f, df, split) if curve else None
    t0 = time.perf_counter()
    res = f.fit(df, no_val, callback=tracker)
    eval_seconds = tracker.seconds if tracker else 0.0
    fit_total, train_seconds = time.perf_counter() - t0 - eval_seconds, res.seconds - eval_seconds
    n_windows, epochs = len(f.windows(df, split, "train")), len(res.history)
    t1 = time.perf_counter()
    ev = f.evaluate(df, split, "test")
    m, t = cfg.model, cfg.train
    return {
        "status": "ok", "library": "forecasting (this pipeline)", "config": kind, "epochs": epochs,
        "train_windows": n_windows * epochs, "train_seconds": train_seconds, "fit_seconds_total": fit_total,
        "windows_per_second": n_windows * epochs / train_seconds, "seconds_per_epoch": train_seconds / epochs,
        "predict_seconds": time.perf_counter() - t1, "n_test_windows": len(ev.y), "n_parameters": f.n_parameters,
        "test_mse_std": ev.metrics["mse_std"], "test_mae_std": ev.metrics["mae_std"],
        "settings": {"model": f"RecurrentForecaster GRU {m.hidden} x {m.layers}, segment {m.segment} "
                              f"({m.lookback // m.segment} recurrent steps), last state -> linear head"
                              + (f", linear highway (init {m.init})" if getattr(m, "highway", False) else ""),
                     "lookback": m.lookback, "norm": m.norm, "segment": m.segment, "dropout": m.dropout,
                     "loss": getattr(t, "loss", "mse"),
                     "optimizer": f"AdamW lr {t.lr:g} wd {t.weight_decay:g}, clip {t.clip}",
                     "batch_size": t.batch_size, "max_epochs": t.max_epochs, "patience": t.patience,
                     "early_stopping": "on the training loss (no validation part)", "calendar": cfg.calendar},
        **({"curve": tracker.points} if tracker else {}),
    }


def run_peers(kind: str, out: dict, installs: dict, args, borders, epochs: int) -> None:
    """Each peer's `kind` run into `out[name]`, or the reason it was not measured."""
    for name in PEERS:
        inst = installs[name]
        if inst["status"] != "ok":
            out[name] = {"status": inst["status"], "reason": inst.get("reason", "")}
            continue
        print(f"[speed] peers: {name} {inst['version']}, {kind} configuration", file=sys.stderr, flush=True)
        out[name] = run_peer(name, kind, args, borders, epochs)


def bench_same(args, borders, epochs: int, installs: dict) -> dict:
    """(d1) Library overhead: the same GRU in each library; ours runs before and after the peers
    and its windows/s is the mean of both, so that load drift hits every side alike."""
    df, split = C.etth1_frame(args.data_dir, borders[2]), C.etth1_split(borders)
    cfg = ours_config("same", epochs, args.seed, args.quick, df, split)

    def ours(tag: str) -> dict:
        print(f"[speed] peers: this pipeline, same configuration ({tag} the peers)", file=sys.stderr, flush=True)
        return ours_run(df, split, cfg, "same")

    first = ours("before")
    runs = {"ours": {**first, "windows_per_second_runs": [first["windows_per_second"]]}}
    run_peers("same", runs, installs, args, borders, epochs)
    if any(runs[name].get("status") == "ok" for name in PEERS):
        o, again = runs["ours"], ours("after")
        o["windows_per_second_runs"].append(again["windows_per_second"])
        o["windows_per_second"] = statistics.mean(o["windows_per_second_runs"])
        o["seconds_per_epoch"] = statistics.mean([o["seconds_per_epoch"], again["seconds_per_epoch"]])
        o["test_mse_std_repeat"] = again["test_mse_std"]
    return {"runs": runs, "comparisons": same_comparisons(runs)}


def each_measured_peer(runs: dict, compare: Callable[[dict, str, dict], dict]) -> list[dict]:
    """`compare(ours, name, peer)` for every peer in `runs` that was measured, in PEERS order."""
    ours = runs["ours"]
    return [compare(ours, name, runs[name]) for name in PEERS if runs.get(name, {}).get("status") == "ok"]


def same_comparison(ours: dict, name: str, peer: dict) -> dict:
    """Our windows/s over the peer's on the same GRU, and whether the 5x goal is met at equal or better MSE."""
    ratio = ours["windows_per_second"] / peer["windows_per_second"]
    mse_ok = ours["test_mse_std"] <= peer["test_mse_std"]
    return {"peer": name, "ratio": ratio, "mse_ours": ours["test_mse_std"], "mse_peer": peer["test_mse_std"],
            "mse_equal_or_better": mse_ok, "goal_met": bool(ratio >= GOALS["peer_speedup"] and mse_ok)}


def same_comparisons(runs: dict) -> list[dict]:
    """(d1) One `same_comparison` per measured peer."""
    return each_measured_peer(runs, same_comparison)


def bench_defaults(args, borders, installs: dict) -> dict:
    """(d2) Each library's own default configuration on the same data: different architectures."""
    print("[speed] peers: this pipeline, default configuration", file=sys.stderr, flush=True)
    df, split = C.etth1_frame(args.data_dir, borders[2]), C.etth1_split(borders)
    cfg = ours_config("default", 0, args.seed, args.quick, df, split)
    runs = {"ours": ours_run(df, split, cfg, "default", curve=True)}
    run_peers("default", runs, installs, args, borders, 0)
    return {"runs": runs, "comparisons": default_comparisons(runs)}


def default_comparison(ours: dict, name: str, peer: dict) -> dict:
    """The peer's accuracy and time, ours, and when (if ever) ours first matched the peer's test MSE."""
    hit = next((p for p in ours["curve"] if p["test_mse_std"] <= peer["test_mse_std"]), None)
    return {"peer": name, "mse_peer": peer["test_mse_std"], "peer_train_seconds": peer["train_seconds"],
            "peer_fit_seconds_total": peer["fit_seconds_total"], "mse_ours": ours["test_mse_std"],
            "ours_fit_seconds_total": ours["fit_seconds_total"],
            "ours_seconds_to_peer_mse": hit["seconds"] if hit else None,
            "ours_epoch_to_peer_mse": hit["epoch"] if hit else None}


def default_comparisons(runs: dict) -> list[dict]:
    """(d2) One `default_comparison` per measured peer."""
    return each_measured_peer(runs, default_comparison)


def bench_peers(args, borders, mode: str) -> dict:
    epochs = 1 if args.quick else 10
    s = SAME
    installs = {name: ({"status": "skipped", "reason": "--peers skip" + (" (default with --quick)" if args.quick
                                                                       else "")}
                       if mode == "skip" else ensure_peer(name, mode, args.peer_venvs)) for name in PEERS}
    return {
        "data": "ETTh1-OT, standardized with training mean/std", "borders": list(borders),
        "protocol": "every run fits on windows whose targets lie in the training rows (no validation part, no "
                    "early stopping on held-out data), then forecasts every test window (stride 1); MSE/MAE on "
                    "the standardized scale; windows/s from the first to the last training batch",
        "same_config": {**s, "epochs": epochs, "cell": "gru", "segment": 1},
        "worker_sha256": C.sha256_file(WORKER), "install": installs,
        "same": bench_same(args, borders, epochs, installs),
        "defaults": bench_defaults(args, borders, installs),
    }


# --------------------------------------------------------------------------- report


def goals(res: dict) -> dict:
    w, t, b, p = res["windowing"], res["training"], res["batch"], res["peers"]
    same = p["same"]["comparisons"]
    return {
        "windowing_speedup_ge_100x": max(w["speedup_arrays"], w["speedup_view"]) >= GOALS["windowing_speedup"],
        "windowing_view_memory_not_times_L": w["view_peak_over_input"] < w["lookback"] / 4,
        "training_overhead_le_1.15x": t["ratio_best"] <= GOALS["training_overhead"],
        "batch_10000_series_lt_10s": {k: (r["predict_best"] < GOALS["batch_seconds"] if b["n_series"] >= 10_000
                                          else None) for k, r in b["models"].items()},
        # Only the same-model runs (d1) speak to library speed; the default configurations (d2) differ in
        # architecture and carry no verdict.
        "peers_same_model_5x_at_equal_or_better_mse": {c["peer"]: c["goal_met"] for c in same} or None,
    }


def render_windowing(w: dict, g: dict) -> list[str]:
    return [
        f"**(a) Windowing** – {w['data']}, lookback {w['lookback']}, horizon {w['horizon']}, "
        f"{w['n_windows']:,} windows ({w['timing']} of {w['repeats']}); outputs checked identical.\n",
        C.table(["method", "seconds", "speed-up vs loop", "peak memory / input"],
                [["plain Python loop + np.stack", f"{w['loop_seconds']:.4f}", "1x", f"{w['loop_peak_over_input']:.1f}x"],
                 ["make_windows + arrays() (copies every window)", f"{w['arrays_seconds']:.4f}",
                  f"{w['speedup_arrays']:,.0f}x", f"{w['arrays_peak_over_input']:.1f}x"],
                 ["make_windows + view() (zero-copy)", f"{w['view_seconds']:.6f}", f"{w['speedup_view']:,.0f}x",
                  f"{w['view_peak_over_input']:.2f}x"]]),
        f"Goal ≥ 100x over the loop: {C.verdict(g['windowing_speedup_ge_100x'])}"
        f" (copying gather {w['speedup_arrays']:,.0f}x, zero-copy view {w['speedup_view']:,.0f}x). "
        f"The view shares memory with the input ({w['input_bytes']:,} bytes); its peak allocation is "
        f"{w['view_peak_over_input']:.2f}x the input (the window start indices), not "
        f"{w['lookback'] + w['horizon']}x: {C.verdict(g['windowing_view_memory_not_times_L'])}.\n",
    ]


def render_training(t: dict, g: dict) -> list[str]:
    m = t["model"]
    return [
        f"**(b) Training epoch** – GRU hidden {m['hidden']} x {m['layers']} layers, lookback {m['lookback']}, "
        f"horizon {m['horizon']}, batch {t['batch_size']}, {t['n_windows']:,} ETTh1-OT windows; "
        f"{t['repeats']} interleaved repeats after a warm-up.\n",
        C.table(["loop", "best epoch (s)", "all epochs (s)"],
                [["bare PyTorch loop (the floor)", f"{t['bare_best']:.2f}",
                  ", ".join(f"{s:.2f}" for s in t["bare_seconds"])],
                 ["forecasting.core.training.fit", f"{t['fit_best']:.2f}", ", ".join(f"{s:.2f}" for s in t["fit_seconds"])]]),
        f"fit / floor = {t['ratio_best']:.3f}x (best of each; median of paired ratios "
        f"{t['ratio_median_paired']:.3f}x; CPU seconds {t['ratio_cpu_best']:.3f}x). Goal ≤ 1.15x on the CPU: "
        f"{C.verdict(g['training_overhead_le_1.15x'])}. Floor: {t['floor']}.\n",
    ]


def render_batch(b: dict, g: dict) -> list[str]:
    return [
        f"**(c) Batch forecasting** – {b['n_series']:,} series x {b['history_rows_per_series']} hourly points, "
        f"lookback {b['lookback']}, horizon {b['horizon']}, GRU hidden {b['model']['hidden']} x "
        f"{b['model']['layers']} with calendar features, through a {b['store']}; interleaved repeats.\n",
        C.table(["model", "load (s)", "predict wall, best (s)", "predict CPU, best (s)", "series / s", "< 10 s"],
                [[f"segment {k.removeprefix('segment')} (`{r['model_uri']}`)", f"{r['load_seconds']:.2f}",
                  f"{r['predict_best']:.2f} (all: {', '.join(f'{s:.1f}' for s in r['predict_seconds'])})",
                  f"{r['predict_cpu_best']:.2f}", f"{r['series_per_second']:,.0f}",
                  C.verdict(g["batch_10000_series_lt_10s"][k])] for k, r in b["models"].items()]),
        f"Predict includes {b['includes']}. CPU seconds count this process only; wall above CPU means "
        "the core was shared with other work.\n",
    ]


def run_label(key: str, r: dict) -> str:
    return "forecasting (this pipeline)" if key == "ours" else f"{key} {r.get('version', '')}".strip()


def not_measured(key: str, r: dict, width: int, at: int) -> list[str]:
    """A table row for a run that has no numbers, the reason in column `at`."""
    row = [run_label(key, r), *(["–"] * (width - 1))]
    row[at] = f"not measured: {r.get('status')}: {r.get('reason', '')}"[:300]
    return row


def render_same(p: dict, g: dict) -> list[str]:
    s, runs = p["same_config"], p["same"]["runs"]
    rows = []
    for key, r in runs.items():
        if r.get("status") != "ok":
            rows.append(not_measured(key, r, 7, 6))
            continue
        wps = f"{r['windows_per_second']:,.0f}"
        if len(r.get("windows_per_second_runs", [])) > 1:
            wps += " (before/after peers: " + " / ".join(f"{v:,.0f}" for v in r["windows_per_second_runs"]) + ")"
        rows.append([run_label(key, r), wps, f"{r['seconds_per_epoch']:.2f}", fmt_int(r.get("n_parameters")),
                     f"{r['test_mse_std']:.4f}", f"{r['test_mae_std']:.4f}", r["settings"]["model"]])
    lines = [
        f"**(d1) Library overhead: the same model in each library** – a step-by-step GRU (hidden {s['hidden']} x "
        f"{s['layers']}, {s['lookback']} recurrent steps, per-window standardization, MSE, Adam lr {s['lr']:g}, "
        f"gradient clipping {s['clip']}, batch {s['batch_size']}, {s['epochs']} epochs) on the same data. The heads "
        "differ only as each library builds them (a linear layer; parameter counts below). Protocol: "
        f"{p['protocol']}.\n",
        C.table(["run", "windows / s", "s / epoch", "parameters", "test MSE (std)", "test MAE (std)", "model"], rows)]
    if p["same"]["comparisons"]:
        lines.append(C.table(
            ["peer", "our windows/s ÷ peer's", "MSE ours", "MSE peer", "≥ 5x at equal or better MSE"],
            [[c["peer"], f"{c['ratio']:.2f}x", f"{c['mse_ours']:.4f}", f"{c['mse_peer']:.4f}",
              C.verdict(c["goal_met"])] for c in p["same"]["comparisons"]]))
    return lines


def fmt_int(v) -> str:
    return "–" if v is None else f"{int(v):,}"


def render_defaults(p: dict) -> list[str]:
    rows, notes = [], []
    for key, r in p["defaults"]["runs"].items():
        if r.get("status") != "ok":
            rows.append(not_measured(key, r, 8, 1))
            continue
        rows.append([run_label(key, r), r["settings"]["model"], f"{r['epochs']:g}", f"{r['train_seconds']:.1f}",
                     f"{r['fit_seconds_total']:.1f}", fmt_int(r.get("n_parameters")),
                     f"{r['test_mse_std']:.4f}", f"{r['test_mae_std']:.4f}"])
        conf = "; ".join(f"{k} {v}" for k, v in r["settings"].items() if k != "model")
        notes.append(f"- {run_label(key, r)}: {conf}")
    lines = [
        "**(d2) Each library's own default configuration – different architectures and configurations, not a "
        "library-speed comparison.** Each library's default GRU for this task (only lookback "
        f"{p['same_config']['lookback']} and horizon {p['same_config']['horizon']} given) with its own default "
        "training budget; ours is the first trial of its default search space for hourly data (season-long "
        "segments). Same data and protocol as (d1); no goal verdict.\n",
        C.table(["run", "model", "epochs", "training (s)", "fit total (s)", "parameters",
                 "test MSE (std)", "test MAE (std)"], rows), "Settings:\n", "\n".join(notes) + "\n"]
    for c in p["defaults"]["comparisons"]:
        reach = (f"matched it after {c['ours_seconds_to_peer_mse']:.1f} s (epoch {c['ours_epoch_to_peer_mse']})"
                 if c["ours_seconds_to_peer_mse"] is not None else "never matched it")
        lines.append(f"- vs the {c['peer']} default: {c['peer']} ended at test MSE {c['mse_peer']:.4f} after "
                     f"{c['peer_fit_seconds_total']:.1f} s; ours {reach} and ended at {c['mse_ours']:.4f} after "
                     f"{c['ours_fit_seconds_total']:.1f} s.")
    if p["defaults"]["comparisons"]:
        lines.append("\nTimes are from the call to fit (for ours, the per-epoch test scoring is excluded: the test "
                     "MSE after each epoch is recorded to find when ours first matched a peer, never used to "
                     "select a model).")
    return lines + [""]


def render(res: dict) -> str:
    w, t, b, p, g = res["windowing"], res["training"], res["batch"], res["peers"], res["goals"]
    lines = ["## Speed\n", C.conditions(res), *render_windowing(w, g), *render_training(t, g), *render_batch(b, g)]
    lines += [*render_same(p, g), *render_defaults(p)] if "same" in p else [OLD_PEERS + "\n"]
    return "\n".join(lines)


def summary(res: dict) -> str:
    """A few lines for the Results block."""
    w, t, b, g, p = res["windowing"], res["training"], res["batch"], res["goals"], res["peers"]
    rows = [
        ["windowing vs Python loop (≥ 100x)",
         f"{w['speedup_arrays']:,.0f}x copying, {w['speedup_view']:,.0f}x zero-copy view",
         C.verdict(g["windowing_speedup_ge_100x"])],
        ["window view peak memory / input (not x L)", f"{w['view_peak_over_input']:.2f}x",
         C.verdict(g["windowing_view_memory_not_times_L"])],
        ["training epoch vs bare PyTorch loop (≤ 1.15x)", f"{t['ratio_best']:.3f}x",
         C.verdict(g["training_overhead_le_1.15x"])],
    ]
    for k, r in b["models"].items():
        rows.append([f"batch forecast, {b['n_series']:,} series via models:/…@champion, {k.replace('segment', 'segment ')} "
                     "(< 10 s)", f"{r['predict_best']:.2f} s ({r['series_per_second']:,.0f} series/s)",
                     C.verdict(g["batch_10000_series_lt_10s"][k])])
    rows += summary_peers(p)
    return C.table(["speed", "result", "goal"], rows)


OLD_PEERS = ("(d) Peers: recorded before the split into library overhead (same model) and default "
             "configurations; rerun `python benchmarks/speed.py`")


def summary_peers(p: dict) -> list[list[str]]:
    if "same" not in p:  # a result from before the split: no row pretends to compare libraries
        return [["peers", OLD_PEERS.removeprefix("(d) Peers: "), "not measured"]]
    rows = [[f"library overhead, same GRU: ours vs {c['peer']} windows/s (≥ 5x, MSE ≤ peer)",
             f"{c['ratio']:.2f}x, MSE {c['mse_ours']:.4f} vs {c['mse_peer']:.4f}", C.verdict(c["goal_met"])]
            for c in p["same"]["comparisons"]]
    for c in p["defaults"]["comparisons"]:
        reach = (f"matched it after {c['ours_seconds_to_peer_mse']:.1f} s" if c["ours_seconds_to_peer_mse"] is not None
                 else "never matched it")
        rows.append([f"default configs (different architectures): ours vs {c['peer']}",
                     f"{c['peer']} MSE {c['mse_peer']:.4f} in {c['peer_fit_seconds_total']:.0f} s; ours {reach}, "
                     f"ended at {c['mse_ours']:.4f} in {c['ours_fit_seconds_total']:.1f} s",
                     "n/a (not a library comparison)"])
    for part in ("same", "defaults"):
        for k, r in p[part]["runs"].items():
            if r.get("status") != "ok":
                rows.append([f"{k}, {'same GRU' if part == 'same' else 'default config'}",
                             f"not measured ({r.get('status')})", "not measured"])
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--peers", choices=("install", "existing", "skip"), default=None,
                   help="peer libraries: install into benchmarks/.venv-peers-* if missing (default), use only "
                        "existing ones, or skip (default with --quick)")
    p.add_argument("--peer-venvs", type=Path, default=PEER_VENVS,
                   help="folder holding the .venv-peers-<name> virtualenvs (default benchmarks/), e.g. to "
                        "reuse them from a clean checkout of this repository elsewhere")
    args = p.parse_args(argv)
    C.require(args.data_dir, "ett/ETTh1.csv")
    C.set_threads(args.threads)
    peers = args.peers or ("skip" if args.quick else "install")
    run = C.Run(NAME, args, budget={"peers": peers, "peer_epochs": 1 if args.quick else 10},
                extra_versions=("mlflow",), script=Path(__file__))
    res = {}
    print("[speed] (a) windowing", file=sys.stderr, flush=True)
    res["windowing"] = bench_windowing(args.data_dir, args.quick)
    print("[speed] (b) training epoch", file=sys.stderr, flush=True)
    res["training"] = bench_training(args.data_dir, args.quick, args.seed)
    print("[speed] (c) batch forecasting", file=sys.stderr, flush=True)
    res["batch"] = bench_batch(args.quick, args.seed)
    print("[speed] (d) peers", file=sys.stderr, flush=True)
    res["peers"] = bench_peers(args, C.ETTH1_QUICK_BORDERS if args.quick else C.ETTH1_BORDERS, peers)
    res["goals"] = goals(res)
    out = run.finish(res)
    js, md = C.write(args.out, NAME, out, render(out))
    print(f"[speed] wrote {js} and {md}", file=sys.stderr)
    return out


if __name__ == "__main__":
    main()

"""The fit loop: device auto, bf16 autocast on CUDA, clipping, early stopping, seeds.

Training data stays on the device as one tensor; every batch is gathered from
an `unfold` view of it by window start index, so there is no per-sample
Dataset and no host-to-device copy per batch.
"""

from __future__ import annotations

import ctypes
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from forecasting.core.config import PRECISIONS
from forecasting.core.errors import DivergedError, ForecastingError
from forecasting.core.windows import Windows, inputs_targets

EpochCallback = Callable[[int, float, float], None]
# Elementwise errors; the mean of one over a batch is the loss. "mase" is the absolute error weighted
# per series (`fit`'s `weights`): on standardized values that is the error on MASE's scale.
LOSSES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"mse": torch.square, "mae": torch.abs, "mase": torch.abs}
VAL_METRICS = ("mse", "mae")  # validation (early stopping, Optuna objective) is unweighted


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    `max_train_windows` samples that many training windows per epoch (all if None);
    `max_val_windows` scores early stopping on that many evenly spaced validation
    windows (all if None): both bound the cost of an epoch on large panels.
    `val_cutoffs` K > 0 scores only the last K rolling-origin cutoffs of the validation
    part, `val_step` rows apart (default: the horizon): a backtest as the objective.
    """

    lr: float = 1e-3
    batch_size: int = 256
    weight_decay: float = 0.0
    max_epochs: int = 20
    patience: int = 3
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    max_train_windows: int | None = None
    max_val_windows: int | None = None
    eval_batch_size: int = 4096
    val_cutoffs: int = 0
    val_step: int = 0
    loss: str = "mse"  # training loss: mse, mae (the absolute error sMAPE scores) or mase (MASE's own scale)
    val_metric: str = "mse"  # validation (early stopping, Optuna objective): mse or mae
    precision: str = "auto"  # on CUDA: PRECISIONS

    def __post_init__(self) -> None:
        for name, allowed in (("loss", LOSSES), ("val_metric", VAL_METRICS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")


@dataclass
class FitResult:
    """What a fit did: per-epoch history and the cost of it."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val_loss: float = math.inf
    start_val_loss: float | None = None  # the untrained weights' score, when they competed (best_epoch -1)
    seconds: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = "cpu"


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ForecastingError("--device cuda: CUDA is not available on this machine (use auto or cpu)")
    return torch.device(name)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (unchanged if None), restoring the setting after it:
    a process-wide setting, so scoped to the work that needs it."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2():
    """glibc's `mallinfo2`, or None where there is none (not glibc, or glibc < 2.33)."""
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn


class PeakMemory:
    """Peak memory a block used, in MB: CUDA's allocator peak on a GPU; on the CPU the high-water
    mark of heap bytes in use (glibc `mallinfo2`: small blocks + mmapped blocks) above the level at
    entry, sampled every 5 ms. Bytes in use, not resident pages: memory a previous fit freed but the
    process kept does not hide what this fit allocates. Without glibc, the rise of the resident set."""

    _info = _mallinfo2()

    def __init__(self, device: torch.device):
        self.device, self.peak_mb = device, 0.0
        self._stop = threading.Event()

    @classmethod
    def in_use(cls) -> int:
        """Bytes the process has allocated and not freed (or its resident set without glibc)."""
        if cls._info is not None:
            m = cls._info()
            return int(m.uordblks + m.hblkhd)
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096
        except OSError:  # neither: no cheap reading, report 0
            return 0

    def _sample(self, base: int) -> None:
        peak = base
        while not self._stop.wait(0.005):
            peak = max(peak, self.in_use())
        self.peak_mb = max(peak - base, 0) / 2**20

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._sample, args=(self.in_use(),), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def _device_windows(windows: Windows, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The panel on the device as a view of every window [T-W+1, W, F] (as `Windows.view`, no copy)
    and the window starts [N]: a batch is `inputs_targets(view[starts], L)`, gathered on the device."""
    values = torch.from_numpy(windows.panel.values).to(device)  # [T, F]
    view = values.unfold(0, windows.lookback + windows.horizon, 1).transpose(1, 2)  # [T-W+1, W, F]
    return view, torch.from_numpy(windows.starts).to(device)


def amp_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of `precision` on `device`; None for fp32 (and always on the CPU)."""
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None  # auto on a GPU without bf16


def _autocast(device: torch.device, precision: str = "auto"):
    dtype = amp_dtype(device, precision)
    if dtype is None:
        return torch.autocast(device.type if device.type in ("cpu", "cuda") else "cpu", enabled=False)
    return torch.autocast("cuda", dtype=dtype)


@torch.no_grad()
def _loss(model: nn.Module, view: torch.Tensor, starts: torch.Tensor, lookback: int, batch: int,
          metric: str = "mse", precision: str = "auto") -> float:
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(starts), batch):
        x, y = inputs_targets(view[starts[i:i + batch]], lookback)  # [B, L, F], [B, H]
        with _autocast(view.device, precision):
            pred = model(x)
        total += torch.sum(LOSSES[metric](pred.float() - y)).item()
        n += y.numel()
    return total / max(n, 1)


def _val_windows(val: Windows | None, cfg: TrainConfig, device: torch.device) -> tuple | None:
    """Validation view and starts on the device, thinned to `max_val_windows` evenly spaced ones."""
    if val is None or len(val) == 0:
        return None
    view, starts = _device_windows(val, device)
    if cfg.max_val_windows and len(starts) > cfg.max_val_windows:
        starts = starts[torch.linspace(0, len(starts) - 1, cfg.max_val_windows, device=device).long()]
    return view, starts, val.lookback


def _window_weights(windows: Windows, weights: np.ndarray | None, device: torch.device) -> torch.Tensor | None:
    """Per-window loss weights [N] from per-series ones [S], scaled to mean 1 over the windows (so a
    weighted loss keeps the learning rate's meaning); None without weights."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)[windows.series_index]  # [N]
    return torch.from_numpy((w / max(w.mean(), 1e-12)).astype(np.float32)).to(device)


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, view: torch.Tensor, starts: torch.Tensor,
                 order: torch.Tensor, lookback: int, cfg: TrainConfig, weights: torch.Tensor | None = None) -> float:
    """One pass over the windows `order` (indices into `starts`) in minibatches; the mean loss, each
    window's errors weighted by `weights` [N] when given."""
    model.train()
    total, count = torch.zeros((), device=view.device), 0
    # fp16 gradients underflow without loss scaling; everywhere else the scaler passes through.
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(view.device, cfg.precision) == torch.float16)
    for i in range(0, len(order), cfg.batch_size):
        batch = order[i:i + cfg.batch_size]  # [B]
        x, y = inputs_targets(view[starts[batch]], lookback)  # [B, L, F], [B, H]
        with _autocast(view.device, cfg.precision):
            pred = model(x)  # [B, H]
        err = LOSSES[cfg.loss](pred.float() - y)  # [B, H]
        loss = torch.mean(err if weights is None else err * weights[batch, None])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        scaler.step(opt)
        scaler.update()
        total += loss.detach() * len(y)
        count += len(y)
    return (total / count).item()  # one device sync per epoch


def _snapshot(model: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@contextmanager
def _seconds_on_stop(t0: float):
    """When a callback (Optuna pruning) or divergence stops training, the exception carries the
    seconds trained so far as `fit_seconds`: the epochs of a stopped fit were spent all the same."""
    try:
        yield
    except Exception as e:
        e.fit_seconds = time.perf_counter() - t0
        raise


def fit(model: nn.Module, train: Windows, val: Windows | None, cfg: TrainConfig = TrainConfig(),
        callback: EpochCallback | None = None, start_competes: bool = False,
        weights: np.ndarray | None = None) -> FitResult:
    """Train `model` in place with AdamW on `cfg.loss`; keep the weights of the best validation epoch.

    `callback(epoch, train_loss, val_loss)` runs after each epoch and may raise to
    stop (Optuna pruning). A non-finite training loss raises `DivergedError`. With
    `start_competes` the untrained weights are scored first and kept if no epoch beats them. The
    "mase" loss needs `weights` [S]: per series of `train.panel`, MASE units per unit of the values
    (the series' standard deviation over its seasonal-naive MAE, for standardized series).
    """
    if len(train) == 0:
        raise ValueError("no training windows: series are shorter than lookback + horizon")
    if cfg.loss == "mase" and weights is None:
        raise ValueError("the mase loss needs per-series weights (each series' MASE scale)")
    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.to(device).parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    t_view, t_starts = _device_windows(train, device)
    t_weights = _window_weights(train, weights, device) if cfg.loss == "mase" else None  # [N]
    v = _val_windows(val, cfg, device)
    result, best_state, stale, t0 = FitResult(device=str(device)), None, 0, time.perf_counter()
    if v and start_competes:
        # The starting point competes too (best_epoch -1): a model initialized as a baseline (the
        # highway's seasonal-naive or linear start) never ends worse than it on validation.
        result.best_val_loss = result.start_val_loss = _loss(model, *v, cfg.eval_batch_size, cfg.val_metric, cfg.precision)
        best_state = _snapshot(model)
    with PeakMemory(device) as mem, _seconds_on_stop(t0):
        for epoch in range(cfg.max_epochs):
            order = torch.randperm(len(t_starts), generator=gen)[: cfg.max_train_windows or None].to(device)
            train_loss = _train_epoch(model, opt, t_view, t_starts, order, train.lookback, cfg, t_weights)
            if not math.isfinite(train_loss):
                raise DivergedError(f"epoch {epoch}: training loss is {train_loss}")
            val_loss = _loss(model, *v, cfg.eval_batch_size, cfg.val_metric, cfg.precision) if v else train_loss
            result.history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
            if val_loss < result.best_val_loss:
                result.best_val_loss, result.best_epoch, stale, best_state = val_loss, epoch, 0, _snapshot(model)
            else:
                stale += 1
            if callback is not None:
                callback(epoch, train_loss, val_loss)
            if stale > cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds, result.peak_memory_mb = time.perf_counter() - t0, mem.peak_mb
    return result


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: str | torch.device = "auto", batch_size: int = 4096) -> np.ndarray:
    """Forecasts [N, H] for inputs x [N, L, F], in batches."""
    device = resolve_device(device) if isinstance(device, str) else device
    model.to(device).eval()
    out = []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch_size]), dtype=torch.float32, device=device)
        with _autocast(device):
            out.append(model(xb).float().cpu().numpy())
    if not out:
        return np.zeros((0, getattr(getattr(model, "cfg", None), "horizon", 0)), dtype=np.float32)
    return np.concatenate(out)

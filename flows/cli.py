"""The `forecasting` command: ingest, train, forecast, serve, ui, demo.

It sits above the flows (it runs them), so it lives in `flows/`: imports point
one way, flows -> forecasting. Errors print one line and exit non-zero; `--debug`
shows the traceback and Prefect's own logs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

EXIT_ERROR = 2
EXIT_NOTHING = 3  # a forecast in which every series was skipped: nothing written


def _home(args: argparse.Namespace) -> Path:
    home = Path(args.home or os.environ.get("FORECASTING_HOME") or ".").resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _check_names(args: argparse.Namespace) -> None:
    """Dataset and model names are refused before anything is created (they become paths and store names)."""
    from forecasting.data import check_name

    for attr, what in (("name", "dataset name"), ("dataset", "dataset name"), ("model_name", "model name")):
        if getattr(args, attr, None) is not None:
            check_name(getattr(args, attr), what)


def _quiet(debug: bool) -> None:
    """Keep library chatter off the terminal unless debugging (set before prefect is imported)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not debug:
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read once, when mlflow is imported
        for name in ("mlflow", "alembic", "optuna", "httpx"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Prefect's logging setup applies PREFECT_LOGGING_LEVEL when it is imported; when it is already
        # imported (a second `main` in one process), ERROR would let "Task run failed" tracebacks through.
        logging.getLogger("prefect").setLevel(logging.CRITICAL)
        import warnings

        warnings.filterwarnings("ignore")


def _ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=["auto", "long", "wide"], default="auto")
    p.add_argument("--id-col", default="unique_id")
    p.add_argument("--time-col", default="ds")
    p.add_argument("--target-col", default="y")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="state directory (default: $FORECASTING_HOME or the current directory)")
    common.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    # The same options after the subcommand. SUPPRESS: a subparser's own defaults would otherwise
    # overwrite values given before the subcommand (`forecasting --debug --home H ingest ...`).
    sub_common = argparse.ArgumentParser(add_help=False)
    sub_common.add_argument("--home", default=argparse.SUPPRESS,
                            help="state directory (default: $FORECASTING_HOME or the current directory)")
    sub_common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show tracebacks and library logs")

    parser = argparse.ArgumentParser(prog="forecasting", parents=[common],
                                     description="GRU/LSTM forecasting with Optuna, MLflow and Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[sub_common], help="validate a CSV/Parquet file into data/processed/")
    p.add_argument("source")
    p.add_argument("--name", required=True)
    _ingest_options(p)
    p.add_argument("--freq", help="pandas frequency (inferred if omitted)")
    p.add_argument("--fill", default="interpolate", choices=["interpolate", "ffill", "zero", "error"])
    p.add_argument("--min-length", type=int, default=0, help="series shorter than this are dropped or refused")
    p.add_argument("--short", default="drop", choices=["drop", "error"])

    p = sub.add_parser("train", parents=[sub_common], help="tune, compare and register GRU/LSTM models")
    p.add_argument("name")
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--models", default="gru,lstm")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--timeout", type=float, help="seconds per family search")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite under <home>/mlruns/)")
    p.add_argument("--max-train-windows", type=int, help="windows sampled per training epoch (all if omitted)")
    p.add_argument("--max-val-windows", type=int, help="evenly spaced validation windows scored per epoch")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--workers", type=int, default=1, help="tuning processes sharing each study")
    p.add_argument("--threads", type=int,
                   help="torch threads in this process (small models on a busy CPU run fastest on 1)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="refit the K best trials of each family and register their average as one model")
    _season_options(p)

    p = sub.add_parser("tune-worker", parents=[sub_common],
                       help="join a study from this machine (shared --storage and MLflow store)")
    p.add_argument("name")
    p.add_argument("--horizon", type=int, required=True)
    p.add_argument("--family", default="gru", choices=["gru", "lstm"])
    p.add_argument("--storage", required=True, help="the study's Optuna storage URL (e.g. postgresql://...)")
    p.add_argument("--trials", type=int, default=10, help="finished trials the study should reach")
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--timeout", type=float)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-windows", type=int)
    p.add_argument("--max-val-windows", type=int)
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--index", type=int, default=1, help="worker number: sampler seed offset")
    p.add_argument("--parent-run-id", help="MLflow run to nest the trials under (default: a run of its own)")
    p.add_argument("--threads", type=int, help="torch threads for this worker")
    _season_options(p)

    p = sub.add_parser("backtest", parents=[sub_common],
                       help="rolling-origin backtest of a registered model or a family over the end of a dataset")
    p.add_argument("name", help="processed dataset")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="registered model as NAME@ALIAS (e.g. etth1-gru@champion)")
    who.add_argument("--family", choices=["gru", "lstm"],
                     help="fit this family (its study's best configuration, else the default) before the first cutoff")
    p.add_argument("--windows", type=int, default=5, help="number of cutoffs K")
    p.add_argument("--step", type=int, help="rows between cutoffs (default: the horizon)")
    p.add_argument("--horizon", type=int, help="horizon for --family (a registered model has its own)")
    p.add_argument("--output", help="forecasts file (CSV or Parquet): unique_id, ds, cutoff, y, y_hat, baselines")
    p.add_argument("--max-epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("forecast", parents=[sub_common], help="batch forecast with a registered model")
    p.add_argument("model_name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    _ingest_options(p)

    p = sub.add_parser("serve", parents=[sub_common], help="serve the flows on cron schedules (needs a Prefect server)")
    p.add_argument("--source", default=None, help="file ingested by the daily ingest (default: bundled ETTh1)")
    p.add_argument("--dataset", default="etth1")
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--format", default="auto", choices=["auto", "long", "wide"])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--cron-ingest", default="0 1 * * *")
    p.add_argument("--cron-train", default="0 2 * * 0")
    p.add_argument("--cron-forecast", default="0 3 * * *")

    p = sub.add_parser("ui", parents=[sub_common], help="MLflow UI on the local store (127.0.0.1)")
    p.add_argument("--port", type=int, default=5000)

    p = sub.add_parser("demo", parents=[sub_common], help="the main job on the bundled ETTh1 data")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--horizon", type=int, default=24)
    p.add_argument("--max-train-windows", type=int, default=16384)
    p.add_argument("--max-val-windows", type=int, default=4096)
    return parser


def _season_options(p: argparse.ArgumentParser) -> None:
    """Seasonality and validation-backtest options shared by `train` and `tune-worker`."""
    p.add_argument("--seasons", type=_int_list, default=(),
                   help="seasonal periods in steps, e.g. 48,336 (default: every period the frequency implies "
                        "that the training history covers twice)")
    p.add_argument("--backtest-windows", type=int, default=0,
                   help="cutoffs K of the validation backtest (default: as many as fit, one horizon apart)")
    p.add_argument("--backtest-step", type=int, help="rows between backtest cutoffs (default: the horizon)")
    p.add_argument("--objective", default="val", choices=["val", "backtest"],
                   help="Optuna objective: every validation window, or the mean over the K backtest cutoffs "
                        "(the validation part is then sized to hold exactly those)")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None


def bundled_data() -> Path:
    import forecasting

    path = Path(forecasting.__file__).resolve().parent.parent / "data" / "ETTh1.csv"
    if not path.exists():
        from forecasting.errors import DataError

        raise DataError(f"bundled data not found at {path}; run from a checkout (pip install -e .)")
    return path


# --------------------------------------------------------------------------- commands


def cmd_ingest(args, home: Path) -> None:
    from flows.ingest import ingest_flow

    r = ingest_flow(args.source, args.name, str(home), format=args.format, id_col=args.id_col,
                    time_col=args.time_col, target_col=args.target_col, freq=args.freq, fill=args.fill,
                    min_length=args.min_length, short=args.short)
    print(f"ingested {r['n_series']} series, {r['n_rows']} rows, freq {r['freq']}, "
          f"{r['n_filled']} gap point(s) filled{'' if r['was_sorted'] else ', rows sorted'} -> {r['path']}")
    for uid, reason in r["dropped"]:
        print(f"dropped series {uid!r}: {reason}")


def cmd_train(args, home: Path) -> dict:
    from flows.train import train_flow
    from forecasting.tracking import to_markdown
    from forecasting.training import resolve_device

    resolve_device(args.device)  # refuse --device cuda on a machine without CUDA before any work
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    if args.ensemble < 1:
        from forecasting.errors import ForecastingError

        raise ForecastingError(f"--ensemble must be at least 1, got {args.ensemble}")
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    bad = [m for m in models if m not in ("gru", "lstm")]
    if bad:
        from forecasting.errors import ForecastingError

        raise ForecastingError(f"--models: unknown model family {bad}; use gru and/or lstm")
    r = train_flow(args.name, args.horizon, str(home), models=models, trials=args.trials,
                   max_epochs=args.max_epochs, timeout=args.timeout, device=args.device, seed=args.seed,
                   storage=args.storage, max_train_windows=args.max_train_windows, pruner=args.pruner,
                   workers=args.workers, max_val_windows=args.max_val_windows, seasons=args.seasons,
                   backtest_windows=args.backtest_windows, backtest_step=args.backtest_step,
                   objective=args.objective, ensemble=args.ensemble)
    print("\nComparison on the test part (original scale; mse_std/mae_std on the standardized scale; "
          "val_backtest_* over the validation cutoffs, which decide the champion):\n")
    print(to_markdown(r["table"]))
    print(summary_line(r["summary"]))
    for reg in r["registrations"]:
        prev = reg["previous_champion"]
        vs = f"(champion had {prev:.4f})" if prev is not None else "(first version)"
        print(f"registered {reg['name']} v{reg['version']} -> @{reg['alias']}: "
              f"{reg['metric']} {reg['value']:.4f} {vs}")
    return r


def summary_line(summary: dict) -> str:
    """The best baseline and each model's margin to it, in one sentence."""
    if not summary.get("best_baseline"):
        return "No baseline could be scored."
    margins = ", ".join(f"{m.upper()} {v:+.1%}" for m, v in summary["margins"].items())
    return (f"Best baseline on test {summary['metric']}: {summary['best_baseline']} "
            f"({summary['best_baseline_value']:.4f}); margin to it (negative is better): {margins}")


def cmd_tune_worker(args, home: Path) -> None:
    from forecasting.backtest import BacktestConfig
    from forecasting.pipeline import TrainJob
    from forecasting.tuning import TuneConfig
    from forecasting.worker import run_worker

    tune = TuneConfig(n_trials=args.trials, timeout=args.timeout, max_epochs=args.max_epochs,
                      storage=args.storage, pruner=args.pruner, seed=args.seed)
    job = TrainJob(args.name, args.horizon, (args.family,), tune, device=args.device, seed=args.seed,
                   max_train_windows=args.max_train_windows, max_val_windows=args.max_val_windows,
                   seasons=args.seasons, backtest=BacktestConfig(args.backtest_windows, args.backtest_step),
                   objective=args.objective)
    r = run_worker(home, job, args.family, args.parent_run_id, args.index, args.threads)
    print(f"study {r.study.study_name}: best val_loss {r.study.best_value:.5f} with {r.best_params}")


def cmd_forecast(args, home: Path) -> dict:
    from flows.forecast import forecast_flow

    r = forecast_flow(args.model_name, args.input, args.output, alias=args.alias, home=str(home),
                      format=args.format, id_col=args.id_col, time_col=args.time_col, target_col=args.target_col)
    print(f"forecast {r['n_forecast']} series with {args.model_name} v{r['version']} (@{args.alias}) "
          f"in {r['seconds']:.2f}s -> {r['output']}")
    for uid, reason in r["skipped"][:20]:
        print(f"skipped series {uid!r}: {reason}")
    if len(r["skipped"]) > 20:
        print(f"... and {len(r['skipped']) - 20} more skipped")
    return r


def cmd_backtest(args, home: Path) -> dict:
    from flows.backtest import backtest_flow
    from forecasting.tracking import to_markdown

    if args.windows < 1:
        from forecasting.errors import ForecastingError

        raise ForecastingError(f"--windows must be at least 1, got {args.windows}")
    r = backtest_flow(args.name, str(home), model=args.model, family=args.family, windows=args.windows,
                      step=args.step, horizon=args.horizon, output=args.output, max_epochs=args.max_epochs,
                      seed=args.seed)
    print(f"backtest of {r['what']} at {r['cutoffs']} cutoff(s) over the end of {args.name}:\n")
    print(to_markdown(r["metrics"]))
    if r["output"]:
        print(f"forecasts -> {r['output']}")
    return r


def cmd_serve(args, home: Path) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            from forecasting.errors import ForecastingError

            raise ForecastingError("no Prefect server: start one with `prefect server start` and set "
                                   "PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.deployments import Schedules, ServeConfig, serve_all

    cfg = ServeConfig(source=args.source or str(bundled_data()), dataset=args.dataset, horizon=args.horizon,
                      home=str(home), format=args.format, trials=args.trials)
    serve_all(cfg, Schedules(args.cron_ingest, args.cron_train, args.cron_forecast))


def cmd_ui(args, home: Path) -> None:
    from forecasting.tracking import tracking_uri

    uri = tracking_uri(home)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it", flush=True)
    # The server's own Starlette/FastAPI deprecation warnings are noise a user cannot act on.
    os.environ["PYTHONWARNINGS"] = "ignore::DeprecationWarning,ignore:starlette.middleware.wsgi is deprecated"
    os.execv(sys.executable, cmd)


def cmd_demo(args, home: Path) -> None:
    from flows.forecast import forecast_flow
    from flows.ingest import ingest_flow

    t0 = time.perf_counter()
    source = bundled_data()
    print(f"1/4 ingest {source.name} (wide -> long)", flush=True)
    r = ingest_flow(str(source), "etth1", str(home), format="wide")
    print(f"    {r['n_series']} series x {r['n_rows'] // r['n_series']} hourly points -> {r['path']}")
    print(f"2/4 tune GRU and LSTM ({args.trials} trials each, <= {args.max_epochs} epochs), "
          "refit, compare, register", flush=True)
    train_args = argparse.Namespace(name="etth1", horizon=args.horizon, models="gru,lstm", trials=args.trials,
                                    max_epochs=args.max_epochs, timeout=None, device="auto", seed=0,
                                    storage=None, max_train_windows=args.max_train_windows, pruner="median",
                                    workers=1, max_val_windows=args.max_val_windows, seasons=(),
                                    backtest_windows=0, backtest_step=None, objective="val", ensemble=1)
    cmd_train(train_args, home)
    print("3/4 batch forecast with models:/etth1-gru@champion", flush=True)
    out = home / "data" / "forecasts" / "etth1-gru.csv"
    f = forecast_flow("etth1-gru", r["path"], str(out), home=str(home))
    print(f"    {f['n_forecast']} series x {args.horizon} steps -> {f['output']}")
    print(f"4/4 done in {time.perf_counter() - t0:.0f}s\n")
    uri = f"sqlite:///{home / 'mlruns' / 'mlflow.db'}"
    print("Open the MLflow UI (runs, trials, plots, comparison table, registered models):")
    print(f"    forecasting ui --home {home}        # or: mlflow ui --backend-store-uri {uri}")
    print("    then browse http://127.0.0.1:5000\n")
    print("Load the champion in Python:")
    print(f"    import mlflow, pandas as pd; mlflow.set_tracking_uri('{uri}')")
    print("    model = mlflow.pyfunc.load_model('models:/etth1-gru@champion')")
    print(f"    model.predict(pd.read_parquet('{r['path']}'))")


COMMANDS = {"ingest": cmd_ingest, "train": cmd_train, "tune-worker": cmd_tune_worker, "forecast": cmd_forecast,
            "backtest": cmd_backtest,
            "serve": cmd_serve,
            "ui": cmd_ui, "demo": cmd_demo}


FLOW_COMMANDS = ("ingest", "train", "forecast", "backtest", "demo")  # they run flows: they need a Prefect API


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet(args.debug)
    from forecasting.errors import ForecastingError, NothingToForecastError

    try:
        _check_names(args)
        home = _home(args)
        if args.command in FLOW_COMMANDS:
            from flows.server import prefect_api

            with prefect_api(args.debug):  # a temporary API server that dies with this command
                COMMANDS[args.command](args, home)
        else:
            COMMANDS[args.command](args, home)
    except NothingToForecastError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except (ForecastingError, FileNotFoundError, PermissionError, ValueError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

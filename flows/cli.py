"""The `forecasting` command: ingest, train, forecast, serve, ui, demo.

It sits above the flows (it runs them), so it lives in `flows/`: imports point
one way, flows -> forecasting. Errors print one line and exit non-zero; `--debug`
shows the traceback and Prefect's own logs.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from forecasting import families
from forecasting.api.jobs import BacktestJob, TrainJob, check_levels, name_list
from forecasting.core.allocator import keep_freed_memory
from forecasting.core.config import IngestConfig
from forecasting.core.home import Home
from forecasting.core.options import add_options, from_flags, from_options, positive_int

# Exit codes (the README lists them): each kind of failure its own, one `error:` line each.
EXIT_INTERNAL = 1  # anything unforeseen (a bug): --debug shows the traceback
EXIT_ERROR = 2  # refused input or option
EXIT_NOTHING = 3  # a forecast in which every series was skipped: nothing written
EXIT_OS = 4  # the operating system refused: disk full, read-only folder, a directory where a file goes
EXIT_STORE = 5  # a store or service failed: MLflow, the Optuna database (SQLAlchemy), the Prefect API
EXIT_INTERRUPTED = 130
# Where a library's failures come from, and what the user should check.
STORES = {"mlflow": "MLflow store (MLFLOW_TRACKING_URI or <home>/mlruns/mlflow.db)",
          "sqlalchemy": "database (the Optuna storage, --storage, or the MLflow store)",
          "optuna": "Optuna storage (--storage or <home>/mlruns/optuna.db)",
          "prefect": "Prefect API (PREFECT_API_URL, or the command's temporary server)",
          "httpx": "server the command talks to (PREFECT_API_URL, MLFLOW_TRACKING_URI)"}


def _home(args: argparse.Namespace) -> Path:
    """The home folder, created; a command that writes into it (and into the Prefect home) is refused
    first when it cannot: a read-only disk, no permission, or too little free space."""
    from forecasting.core.files import check_writable

    home = Path(args.home or os.environ.get("FORECASTING_HOME") or ".").resolve()
    if args.command in WRITING_COMMANDS:
        check_writable(home)
        if os.environ.get("PREFECT_HOME"):
            check_writable(os.environ["PREFECT_HOME"], "PREFECT_HOME")
    home.mkdir(parents=True, exist_ok=True)
    return home


def _check_names(args: argparse.Namespace) -> None:
    """Dataset and model names are refused before anything is created (they become paths and store names)."""
    from forecasting.core.config import check_name

    for attr, what in (("name", "dataset name"), ("dataset", "dataset name"), ("model_name", "model name")):
        if getattr(args, attr, None) is not None:
            check_name(getattr(args, attr), what)


def _quiet(debug: bool) -> None:
    """Keep library chatter off the terminal unless debugging: process-wide logging settings, made
    here at the command's entry only (and before prefect and mlflow are imported)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # like Prefect's analytics: off unless asked
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not debug:
        # Flow and task runs log to the Prefect API (the UI shows them), not to the terminal: the command
        # prints its own lines, and Prefect's "Task run failed" tracebacks would follow its one-line error.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # read once, when mlflow is imported
        # Prefect's background senders log under their class names, outside "prefect": their "Still
        # processing items" warning at exit would follow a command's one-line error.
        for name in ("mlflow", "alembic", "optuna", "httpx", "EventsWorker", "APILogWorker"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # Prefect's logging setup applies PREFECT_LOGGING_LEVEL when it is imported; when it is already
        # imported (a second `main` in one process), ERROR would let "Task run failed" tracebacks through.
        logging.getLogger("prefect").setLevel(logging.CRITICAL)


@contextmanager
def _warnings_shown(debug: bool) -> Iterator[None]:
    """Library warnings (pandas, MLflow, Prefect deprecations) are noise to a user running a command:
    hidden for the command's duration unless debugging, and the filters restored after it."""
    with warnings.catch_warnings():
        if not debug:
            warnings.simplefilter("ignore")
        yield


HOME_HELP = "state directory (default: $FORECASTING_HOME or the current directory)"
DEBUG_HELP = "show tracebacks and library logs"
QUIET_HELP = "no progress lines: only results, warnings and errors"
VERBOSE_HELP = "one progress line per epoch as well as per trial"


def _common_options() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """`--home`, `--debug`, `--quiet` and `--verbose`, before the subcommand and after it. After it they
    default to SUPPRESS: a subparser's own defaults would otherwise overwrite values given before it."""
    common, sub_common = (argparse.ArgumentParser(add_help=False) for _ in range(2))
    for parser, default in ((common, None), (sub_common, argparse.SUPPRESS)):
        parser.add_argument("--home", default=default, help=HOME_HELP)
        parser.add_argument("--debug", action="store_true", default=default or False, help=DEBUG_HELP)
        shown = parser.add_mutually_exclusive_group()
        shown.add_argument("--quiet", "-q", action="store_true", default=default or False, help=QUIET_HELP)
        shown.add_argument("--verbose", "-v", action="store_true", default=default or False, help=VERBOSE_HELP)
    return common, sub_common


class _Help(argparse.HelpFormatter):
    """Every option's default in its help line (unless it has none or the help already says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse.BooleanOptionalAction) and "default" not in text:
            return f"{text} (default: {'on' if action.default else 'off'})"
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS, (), [])
                and "default" not in text):
            shown = ",".join(map(str, action.default)) if isinstance(action.default, tuple | list) else "%(default)s"
            text += f" (default: {shown})"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command line: every option of a job comes from its config dataclass (declared once).
    Building it imports no pandas, torch or scikit-learn: `--help` answers at once."""
    common, sub_common = _common_options()
    parser = argparse.ArgumentParser(prog="forecasting", parents=[common], formatter_class=_Help,
                                     description="GRU/LSTM forecasting with Optuna, MLflow and Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, help_) in SUBCOMMANDS.items():
        add(sub.add_parser(name, parents=[sub_common], help=help_, description=help_, formatter_class=_Help))
    return parser


def _ingest_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="CSV or Parquet file, long (unique_id, ds, y) or wide (a time column and one "
                   "column per series); a path, a file:// URL or any URL fsspec opens (s3://... with s3fs installed)")
    p.add_argument("--name", required=True, help="dataset name: the processed file, experiment, study and model "
                   "names derive from it")
    add_options(p, IngestConfig)


THREADS_HELP = ("torch threads (default: the CPUs this process may use, by affinity and cgroup quota, less "
                "those other work keeps busy and, for train and demo off a cluster, one for the work beside "
                "the tuning; split between workers)")


def _threads_option(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--threads", type=positive_int, help=THREADS_HELP + what)


def _train_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="processed dataset (from `forecasting ingest --name NAME`)")
    add_options(p, TrainJob)
    _threads_option(p)
    _cluster_option(p, "the tuning workers (--workers of them, default one per cluster worker) are its tasks, "
                       "all on one Optuna study")


def _family(name: str) -> str:
    """An option's parser: a registered family's name (an unknown one is the option's error)."""
    if name not in families.names():
        raise argparse.ArgumentTypeError(f"unknown model family {name!r}; use any of {', '.join(families.names())}")
    return name


def _worker_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="processed dataset the study tunes on")
    add_options(p, TrainJob, skip=("families", "workers", "ensemble", "ensemble_seeds", "ensemble_combine",
                                    "ensemble_check", "combine_families"))
    p.add_argument("--family", default=families.DEFAULT[0], type=_family, help="a registered model family")
    p.add_argument("--index", type=int, default=1, help="worker number: sampler seed offset")
    p.add_argument("--parent-run-id", help="MLflow run to nest the trials under (default: a run of its own)")
    _threads_option(p, " for this worker")


def _backtest_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="processed dataset")
    add_options(p, BacktestJob)
    _cluster_option(p, "the cutoffs' windows are cut into parts forecast by its workers")


def _forecast_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_name", help="registered model name, e.g. etth1-gru")
    p.add_argument("--alias", default="champion", help="which version (default: champion)")
    p.add_argument("--input", required=True, help="history file (CSV or Parquet, long or wide; a path or an fsspec URL)")
    p.add_argument("--output", required=True,
                   help="forecasts file (.csv or .parquet; a path or an fsspec URL), written atomically; no "
                        "extension: a local Parquet dataset folder (under --cluster the workers write its parts)")
    add_options(p, IngestConfig, skip=("freq", "fill", "min_length", "short"))
    p.add_argument("--level", type=int, nargs="*", default=[], metavar="LEVEL",
                   help="prediction-interval levels in percent, e.g. --level 80 95 (the model's conformal calibration)")
    p.add_argument("--plot", metavar="FILE.png", help="also write a fan chart: history, forecast and interval bands")
    p.add_argument("--plot-series", type=name_list, default=(), help="series drawn first in the fan chart, e.g. OT")
    _cluster_option(p, "the series are cut into parts forecast by its workers")


def _cluster_option(p: argparse.ArgumentParser, what: str) -> None:
    from flows.cluster import cluster_spec

    p.add_argument("--cluster", type=cluster_spec, metavar="local[:N]|tcp://HOST:PORT",
                   help=f"run on a Dask cluster through Prefect's Dask task runner: {what} (local: a LocalCluster "
                        "of one single-threaded worker per CPU, local:N of N; tcp://...: a running scheduler whose "
                        "workers see the same files and stores); default: this process only")


def _serve_parser(p: argparse.ArgumentParser) -> None:
    from flows.schedules import Schedules, ServeConfig

    add_options(p, ServeConfig)
    add_options(p, Schedules)


def _models_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", nargs="?", help="only the models of this dataset (default: every registered model)")
    p.add_argument("--versions", type=positive_int, default=5, help="newest versions shown per model")


def _ui_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=positive_int, default=5000, help="port of the UI on 127.0.0.1")


def _demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trials", type=positive_int, default=10, help="Optuna trials per family")
    p.add_argument("--max-epochs", type=positive_int, default=10, help="epochs per trial and for the refit")
    p.add_argument("--horizon", type=positive_int, default=24, help="hours ahead to forecast")
    p.add_argument("--max-train-windows", type=positive_int, default=16384,
                   help="training windows sampled per epoch")
    p.add_argument("--max-val-windows", type=positive_int, default=4096,
                   help="evenly spaced validation windows scored per epoch")
    p.add_argument("--statistical", action=argparse.BooleanOptionalAction, default=False,
                   help="also score statsforecast's MSTL, AutoETS and AutoTheta (adds many minutes: MSTL "
                        "decomposes each of the ~24,000 test windows)")
    p.add_argument("--force", action="store_true", help="register new versions even when nothing changed")
    _threads_option(p)


def bundled_data() -> Path:
    import forecasting

    path = Path(forecasting.__file__).resolve().parent.parent / "data" / "ETTh1.csv"
    if not path.exists():
        from forecasting.core.errors import DataError

        raise DataError(f"bundled data not found at {path}; run from a checkout (pip install -e .)")
    return path


# --------------------------------------------------------------------------- commands


def cmd_ingest(args, home: Path) -> None:
    from flows.ingest import ingest_flow

    r = ingest_flow(args.source, args.name, str(home), from_options(IngestConfig, args))
    print(f"ingested {r['n_series']} series, {r['n_rows']} rows, freq {r['freq']}, "
          f"{r['n_filled']} gap point(s) filled{'' if r['was_sorted'] else ', rows sorted'} -> {r['path']}")
    for uid, reason in r["dropped"]:
        print(f"dropped series {uid!r}: {reason}")


def _storage_hidden(job: TrainJob) -> TrainJob:
    """The job with its Optuna storage URL's password redacted: the real URL stays in this process
    (and its workers' environment), out of MLflow parameters, Prefect flow-run parameters and logs."""
    from forecasting.core.secrets import hide

    return replace(job, tune=replace(job.tune, storage=hide(job.tune.storage)))


def cmd_train(args, home: Path) -> dict:
    return run_train(_storage_hidden(from_options(TrainJob, args, dataset=args.name)), home,
                     getattr(args, "threads", None), getattr(args, "cluster", None))


def run_train(job: TrainJob, home: Path, threads: int | None = None, cluster_spec: str | None = None) -> dict:
    """Run the train flow (its tuning on `cluster_spec`'s Dask workers when given: `--workers` of them,
    default one per cluster worker) and print the short comparison, the best baseline and the registrations."""
    from flows.train import train_flow
    from forecasting.core.cpus import default_threads
    from forecasting.core.training import resolve_device, torch_threads

    resolve_device(job.device)  # refuse --device cuda on a machine without CUDA before any work
    flow, workers = train_flow, 0
    if cluster_spec:
        from flows import cluster

        flow = train_flow.with_options(task_runner=cluster.task_runner(cluster_spec))
        workers = job.workers if job.workers > 1 else cluster.workers(cluster_spec)
    from forecasting.core.secrets import exported

    # A local cluster's worker processes start inside the flow: they inherit the storage's real URL.
    # Off a cluster the flow scores the baselines and finishes each family beside the tuning: one core
    # is theirs (`benchmarks/threads.py --demo`: the same trials for 23% less CPU, the wall time a tie).
    beside = 0 if cluster_spec else 1
    with (torch_threads(threads or default_threads(reserved=beside)),
          exported() if cluster_spec else contextlib.nullcontext()):
        r = flow(job, str(home), cluster_workers=workers)
    print(f"\nComparison on the test part ({job.metric} decides nothing here: the champion is gated on "
          f"val_backtest_{job.metric}, over the validation cutoffs). The full table, with intervals and costs, "
          "is the pipeline run's `comparison` artifact in MLflow.\n")
    print(short_table(r["table"], job.metric))
    print(summary_line(r["summary"]))
    for reg in r["registrations"]:
        print(registration_line(reg))
    for line in losing_champions(r["registrations"], r["summary"]):
        print(f"warning: {line}", file=sys.stderr)
    return r


def summary_line(summary: dict) -> str:
    """The best baseline and each model's margin to it, in one sentence."""
    if not summary.get("best_baseline"):
        return "No baseline could be scored."
    margins = ", ".join(f"{m.upper()} {v:+.1%}" for m, v in summary["margins"].items())
    return (f"Best baseline on test {summary['metric']}: {summary['best_baseline']} "
            f"({summary['best_baseline_value']:.4f}); margin to it (negative is better): {margins}")


def short_table(table, metric: str) -> str:
    """The comparison in a few columns that fit a terminal; margins in percent, like the summary."""
    from forecasting.core.tables import to_markdown

    cols = ["model", metric, *[c for c in ("mae", "rmse") if c != metric], f"val_backtest_{metric}",
            "vs_best_baseline", "train_seconds"]
    short = table.reindex(columns=cols).copy()
    short["vs_best_baseline"] = [f"{v:+.1%}" if v == v else "" for v in short["vs_best_baseline"]]
    return to_markdown(short.rename(columns={"vs_best_baseline": "vs best baseline", "train_seconds": "train s"}))


def registration_line(reg: dict) -> str:
    """What happened in the registry for one family, and the margin to the champion it faced."""
    if reg.get("unchanged"):
        held = f" (@{reg['alias']})" if reg["alias"] else ""
        return (f"{reg['name']}: unchanged since v{reg['version']}{held}: same data, settings and code; nothing "
                "registered (--force registers a new version anyway)")
    prev, line = reg["previous_champion"], f"registered {reg['name']} v{reg['version']} -> @{reg['alias']}: " \
        f"{reg['metric']} {reg['value']:.4f}"
    if prev is None:
        return line + " (first version)"
    margin = reg["value"] / prev - 1.0 if prev else float("nan")
    verdict = "better" if reg["value"] < prev else "worse"
    return line + f", {abs(margin):.1%} {verdict} than champion v{reg['previous_version']} ({prev:.4f})"


def losing_champions(registrations: list[dict], summary: dict) -> list[str]:
    """A line for every champion this run leaves in place that is worse than the best baseline on test."""
    out = []
    for reg in registrations:
        family = reg["name"].rsplit("-", 1)[-1]
        margin = summary.get("margins", {}).get(family)
        if "champion" in str(reg.get("alias") or "").split("@") and margin is not None and margin > 0:
            out.append(f"{reg['name']} v{reg['version']} is @champion but {margin:.1%} worse than the best baseline "
                       f"({summary['best_baseline']}) on test {summary['metric']}: forecast with that baseline, or "
                       "train with a larger budget")
    return out


def cmd_tune_worker(args, home: Path) -> None:
    from forecasting.core.errors import ForecastingError
    from forecasting.pipeline.search import join_study

    job = _storage_hidden(from_options(TrainJob, args, dataset=args.name, families=(args.family,)))
    if not job.tune.storage:
        raise ForecastingError("tune-worker needs --storage: the study's Optuna storage URL (e.g. postgresql://...)")
    from forecasting.core.cpus import default_threads

    r = join_study(home, job, args.family, args.parent_run_id, args.index, args.threads or default_threads())
    print(f"study {r.study.study_name}: best val_loss {r.study.best_value:.5f} with {r.best_params}")


def cmd_forecast(args, home: Path) -> dict:
    from flows import cluster
    from flows.forecast import forecast_flow

    runner = cluster.task_runner(args.cluster, args.cluster_start) if args.cluster else None
    flow = forecast_flow.with_options(task_runner=runner) if runner else forecast_flow
    r = flow(args.model_name, args.input, args.output, alias=args.alias, home=str(home),
             cfg=from_options(IngestConfig, args), levels=tuple(check_levels(tuple(args.level))),
             plot_path=args.plot, plot_series=args.plot_series, partitions=cluster.partitions(args.cluster))
    print(f"forecast {r['n_forecast']} series with {args.model_name} v{r['version']} (@{args.alias}) "
          f"in {time.perf_counter() - args.started:.1f}s (the model itself {r['seconds']:.2f}s) -> {r['output']}" + (f"; fan chart -> {r['plot']}" if r["plot"] else ""))
    for uid, reason in r["skipped"][:20]:
        print(f"skipped series {uid!r}: {reason}")
    if len(r["skipped"]) > 20:
        print(f"... and {len(r['skipped']) - 20} more skipped")
    return r


def cmd_backtest(args, home: Path) -> dict:
    from flows import cluster
    from flows.backtest import backtest_flow
    from forecasting.core.tables import to_markdown

    runner = cluster.task_runner(args.cluster, args.cluster_start) if args.cluster else None
    flow = backtest_flow.with_options(task_runner=runner) if runner else backtest_flow
    r = flow(from_options(BacktestJob, args, dataset=args.name), str(home), partitions=cluster.partitions(args.cluster))
    print(f"backtest of {r['what']} at {r['cutoffs']} cutoff(s) over the end of {args.name}:\n")
    # The frame keeps Nixtla's `y_hat` column; the table names the model (what a reader compares).
    print(to_markdown(r["metrics"].replace({"predictor": {"y_hat": r["what"]}})))
    if r["output"]:
        print(f"forecasts -> {r['output']}")
    return r


def cmd_serve(args, home: Path) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            from forecasting.core.errors import ForecastingError

            raise ForecastingError("no Prefect server: start one with `prefect server start` and set "
                                   "PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.deployments import serve_all
    from flows.schedules import Schedules, ServeConfig

    cfg = from_options(ServeConfig, args, home=str(home))
    serve_all(replace(cfg, source=cfg.source or str(bundled_data())), from_options(Schedules, args))


def cmd_models(args, home: Path) -> None:
    """What the registry holds, as the MLflow UI's Models page shows it: one table per model."""
    import pandas as pd

    from forecasting.core.home import sqlite_path
    from forecasting.core.tables import to_markdown
    from forecasting.tracking import registry, runs
    from forecasting.tracking.runs import tracking_uri

    store = sqlite_path(tracking_uri(home))
    if store is not None and not store.is_file():
        print(f"no models registered in {home} yet (no MLflow store at {store}): run `forecasting train` first")
        return
    runs.configure(home)
    models = registry.listing(args.dataset)
    if not models:
        print(f"no registered model{f' of dataset {args.dataset!r}' if args.dataset else ''} in {tracking_uri(home)}")
    for m in models:
        t = m["tags"]
        print(f"\n{m['name']}: dataset {t.get('dataset', '?')}, horizon {t.get('horizon', '?')}, frequency "
              f"{t.get('frequency', '?')}, family {t.get('family', '?')}; champion gated on {t.get('gate_metric', '?')} "
              f"(lower is better); {len(m['versions'])} version(s)")
        print(to_markdown(pd.DataFrame(m["versions"][:args.versions])))
    if models:
        print(f"\nload one with mlflow.pyfunc.load_model('models:/NAME@champion') against {tracking_uri(home)}")


def cmd_ui(args, home: Path) -> None:
    from forecasting.tracking.runs import tracking_uri, ui_address

    uri = tracking_uri(home)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    print(f"MLflow UI on {ui_address(args.port)} (store {uri}); Ctrl-C stops it", flush=True)
    # The server's own Starlette/FastAPI deprecation warnings are noise a user cannot act on (this
    # process is replaced by the server: the setting is the server's alone).
    os.environ["PYTHONWARNINGS"] = "ignore::DeprecationWarning,ignore:starlette.middleware.wsgi is deprecated"
    os.execv(sys.executable, cmd)


def cmd_demo(args, home: Path) -> None:
    from flows.forecast import forecast_flow
    from flows.ingest import ingest_flow

    t0 = time.perf_counter()
    source = bundled_data()
    print(f"1/4 ingest {source.name} (wide -> long)", flush=True)
    r = ingest_flow(str(source), "etth1", str(home), IngestConfig(format="wide"))
    print(f"    {r['n_series']} series x {r['n_rows'] // r['n_series']} hourly points -> {r['path']}")
    print(f"2/4 tune GRU and LSTM ({args.trials} trials each, <= {args.max_epochs} epochs), "
          "refit, compare, register", flush=True)
    if not args.statistical:
        print("    (statsforecast's MSTL, AutoETS and AutoTheta are left out: add --statistical)", flush=True)
    job = from_flags(TrainJob, dataset="etth1", horizon=args.horizon, trials=args.trials, statistical=args.statistical,
                     max_epochs=args.max_epochs, max_train_windows=args.max_train_windows,
                     max_val_windows=args.max_val_windows, plot_series=("OT",), force=args.force)
    model = "etth1-" + validation_winner(run_train(job, home, args.threads), job)
    print(f"3/4 batch forecast with models:/{model}@champion (the model best on validation), 80% and 95% "
          "intervals", flush=True)
    out = Home.of(home).forecast_file(model)
    f = forecast_flow(model, r["path"], str(out), home=str(home), levels=(80, 95),
                      plot_path=str(out.with_suffix(".png")), plot_series=("OT",))
    print(f"    {f['n_forecast']} series x {args.horizon} steps -> {f['output']} (fan chart {f['plot']})")
    print(f"4/4 done in {time.perf_counter() - t0:.0f}s\n")
    _print_next_steps(home, r["path"], model)


def validation_winner(result: dict, job: TrainJob) -> str:
    """The family (or the families' combination) whose final model scored best on the validation
    backtest (what gates champions)."""
    from forecasting.pipeline.plan import model_names

    table = result["table"]
    rows = table[table["model"].isin(model_names(job))]
    return str(rows.loc[rows[f"val_backtest_{job.metric}"].astype(float).idxmin(), "model"])


def _print_next_steps(home: Path, processed: str, model: str) -> None:
    from forecasting.tracking.runs import ui_address

    uri = Home.of(home).tracking_uri
    print("Open the MLflow UI (runs, trials, plots, comparison table, registered models):")
    print(f"    forecasting ui --home {home}        # or: mlflow ui --backend-store-uri {uri}")
    print(f"    then browse {ui_address()}\n")
    print("Load the champion in Python:")
    print(f"    import mlflow, pandas as pd; mlflow.set_tracking_uri('{uri}')")
    print(f"    model = mlflow.pyfunc.load_model('models:/{model}@champion')")
    print(f"    model.predict(pd.read_parquet('{processed}'))")


COMMANDS = {"ingest": cmd_ingest, "train": cmd_train, "tune-worker": cmd_tune_worker, "forecast": cmd_forecast,
            "backtest": cmd_backtest, "serve": cmd_serve, "models": cmd_models, "ui": cmd_ui, "demo": cmd_demo}
SUBCOMMANDS = {
    "ingest": (_ingest_parser, "validate a CSV/Parquet file into data/processed/"),
    "train": (_train_parser, "tune, compare and register GRU/LSTM models"),
    "tune-worker": (_worker_parser, "join a study from this machine (shared --storage and MLflow store)"),
    "backtest": (_backtest_parser, "rolling-origin backtest of a registered model or a family over the end of a dataset"),
    "forecast": (_forecast_parser, "batch forecast with a registered model"),
    "serve": (_serve_parser, "serve the flows on cron schedules (needs a Prefect server)"),
    "models": (_models_parser, "what the model registry holds: versions, aliases, scores"),
    "ui": (_ui_parser, "MLflow UI on the local store (127.0.0.1)"),
    "demo": (_demo_parser, "the main job on the bundled ETTh1 data"),
}
# The commands that write run records, datasets or stores under the home.
WRITING_COMMANDS = {"ingest", "train", "tune-worker", "forecast", "backtest", "serve", "demo"}
# The commands that run flows need a Prefect API; the modules each imports, while its server starts.
FLOW_COMMANDS = {"ingest": ("flows.ingest",), "train": ("flows.train",), "forecast": ("flows.forecast",),
                 "backtest": ("flows.backtest",), "demo": ("flows.ingest", "flows.train", "flows.forecast")}

# Commands whose local cluster starts with the command (`flows.cluster.started_early`): their tasks get
# all they need as arguments. Train's tuning workers read the Optuna storage's password from the
# environment the flow exports before they start (`secrets.exported`): its cluster starts in the flow.
EARLY_CLUSTER_COMMANDS = {"forecast", "backtest"}

# Commands that usually take seconds run their flows without Prefect heartbeats (flows.server.prefect_api).
SHORT_FLOW_COMMANDS = {"ingest", "forecast"}


def _run(args: argparse.Namespace) -> None:
    _check_names(args)
    home = _home(args)
    # Prefect's local state (its database keeps flow-run parameters) lives in the home, like every other
    # store, unless the user chose a place; set before prefect is imported, which reads it once.
    os.environ.setdefault("PREFECT_HOME", str(Home.of(home).prefect))
    with _warnings_shown(args.debug):
        if args.command not in FLOW_COMMANDS:
            COMMANDS[args.command](args, home)
            return
        import importlib

        from flows.cluster import started_early
        from flows.server import begin, prefect_api

        pending = begin(args.debug)  # the server boots in its own process (or is already up), a local
        # cluster's workers start and import the flow's modules in theirs ...
        early = getattr(args, "cluster", None) if args.command in EARLY_CLUSTER_COMMANDS else None
        with started_early(early, FLOW_COMMANDS[args.command], str(Home.of(home).scratch)) as args.cluster_start:
            for module in FLOW_COMMANDS[args.command]:  # ... while this one imports torch, pandas, MLflow
                importlib.import_module(module)
            with prefect_api(args.debug, pending, heartbeats=args.command not in SHORT_FLOW_COMMANDS):
                COMMANDS[args.command](args, home)


def main(argv: list[str] | None = None) -> int:
    """The `forecasting` command: one `error:` line and a non-zero exit for anything refused."""
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    args.started = started
    # How much a search shows (forecasting.tuning.progress reads it): a process-wide setting, made here.
    os.environ["FORECASTING_PROGRESS"] = "quiet" if args.quiet else "verbose" if args.verbose else "normal"
    keep_freed_memory()  # process-wide too: torch's per-batch buffers are reused, not faulted in anew
    _quiet(args.debug)
    with _CtrlC() as ctrl_c:
        return _outcome(args, ctrl_c)


def _outcome(args: argparse.Namespace, ctrl_c: _CtrlC) -> int:
    """Run the command; its exit code, with one `error:` line for each kind of failure."""
    from forecasting.core.errors import ForecastingError, NothingToForecastError, StoreError

    try:
        _run(args)
    except StoreError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_STORE
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
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 (one line and a distinct code for each kind; --debug re-raises)
        if args.debug:
            raise
        if ctrl_c.seen:  # a failure while the interrupt unwound (see _CtrlC)
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        code, text = failure(exc)
        print(f"error: {text}", file=sys.stderr)
        return code
    return 0


class _CtrlC:
    """Ctrl-C noticed at the command's entry: the handler records it before raising KeyboardInterrupt,
    so a failure that replaces the interrupt while it unwinds (Optuna's "Should not reach." when the
    tell of the stopped trial fails) is still reported as an interruption. Python's handler is put
    back when the command ends (tests call `main` many times in one process). A Ctrl-C the process
    ignores (SIG_IGN, e.g. under nohup) stays ignored."""

    def __init__(self) -> None:
        self.seen = False
        self.old = None

    def __enter__(self) -> _CtrlC:
        current = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread() and current not in (signal.SIG_IGN, None):
            self.old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.seen = True
        if callable(self.old) and self.old is not signal.default_int_handler:
            self.old(signum, frame)  # whoever handled it before (a test runner, an embedding program)
        raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def failure(exc: Exception) -> tuple[int, str]:
    """The exit code and the one line for a failure the command did not foresee as bad input."""
    if isinstance(exc, OSError):
        hint = {28: "free some space", 30: "the folder is read-only", 21: "it is a directory",
                13: "check the folder's permissions"}.get(exc.errno or 0, "check the path")
        where = f": {exc.filename}" if exc.filename else ""
        return EXIT_OS, f"{exc.strerror or _first_line(exc)}{where} ({hint})"
    libs = [c.__module__.split(".")[0] for c in type(exc).__mro__]
    lib = next((m for m in libs if m in STORES), None)
    if lib is not None:
        return EXIT_STORE, f"the {STORES[lib]} failed: {type(exc).__name__}: {_first_line(exc)}"
    if isinstance(exc, RuntimeError) and "Prefect server" in str(exc):
        return EXIT_STORE, f"{_first_line(exc)} (a loaded machine? set PREFECT_API_URL to a running server)"
    return EXIT_INTERNAL, f"unexpected {type(exc).__name__}: {_first_line(exc)} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())

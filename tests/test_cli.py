"""The `forecasting` command: error paths print one `error:` line and exit non-zero, `--debug`
shows the traceback, and ingest + forecast write CSV and Parquet.

Most cases call `flows.cli.main` in-process (the flows run against the session's temporary
Prefect API); a few run the real `forecasting` executable, or a fresh interpreter, to check the
whole of stderr (in-process, Prefect's and MLflow's logging are already configured by the tests).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import pandas as pd
import pytest
from flows_fixtures import (
    DATASET,
    FORECASTING_EXE,
    HORIZON,
    N_SERIES,
    REPO,
    subprocess_env,
    synthetic_frame,
    write_csv,
)

from flows.cli import EXIT_ERROR, build_parser, main

pytest_plugins = ["flows_fixtures"]


@pytest.fixture(autouse=True)
def _environ(restore_environ):
    pass


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    good = synthetic_frame(n_series=2, length=60)
    files = {"missing": d / "nope.csv", "empty": d / "empty.csv", "no_y": d / "no_y.csv",
             "non_numeric": d / "non_numeric.csv"}
    files["empty"].write_text("")
    good.drop(columns="y").to_csv(files["no_y"], index=False)
    bad = good.astype({"y": object})
    bad.loc[7, "y"] = "abc"
    bad.to_csv(files["non_numeric"], index=False)
    return files


def error_cases(files: dict[str, Path], home: Path, csv: Path, out: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (argv, a fragment the error line must contain)."""
    h = ["--home", str(home)]
    fc = ["forecast", f"{DATASET}-gru", *h]
    return {
        "ingest-missing-file": (["ingest", str(files["missing"]), "--name", "x", *h], "file not found"),
        "ingest-empty-file": (["ingest", str(files["empty"]), "--name", "x", *h], "file is empty"),
        "ingest-missing-column": (["ingest", str(files["no_y"]), "--name", "x", *h], "missing"),
        "ingest-non-numeric": (["ingest", str(files["non_numeric"]), "--name", "x", *h], "non-numeric value"),
        "train-unknown-dataset": (["train", "nosuchdata", "--horizon", "12", *h], "no processed dataset 'nosuchdata'"),
        "train-unknown-family": (["train", DATASET, "--horizon", "12", "--models", "foo", *h], "unknown model family"),
        "forecast-unknown-model": (["forecast", "nosuchmodel", "--input", str(csv), "--output", str(out), *h],
                                   "no registered model named 'nosuchmodel'"),
        "forecast-unknown-alias": ([*fc, "--alias", "nosuchalias", "--input", str(csv), "--output", str(out)],
                                   "has no alias 'nosuchalias'"),
        "forecast-missing-input": ([*fc, "--input", str(files["missing"]), "--output", str(out)], "file not found"),
        "forecast-bad-extension": ([*fc, "--input", str(csv), "--output", str(out.with_suffix(".txt"))],
                                   "unsupported extension '.txt'"),
        "train-season-too-long": (["train", DATASET, "--horizon", "12", "--seasons", "24,1000", *h],
                                  "--seasons: period(s) [1000]"),
        "backtest-model-without-alias": (["backtest", DATASET, "--model", f"{DATASET}-gru", *h], "expected NAME@ALIAS"),
        "backtest-family-without-horizon": (["backtest", DATASET, "--family", "gru", *h], "--family needs --horizon"),
        "backtest-unknown-model": (["backtest", DATASET, "--model", "nosuch@champion", *h],
                                   "no registered model named 'nosuch'"),
        "backtest-too-many-windows": (["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "400",
                                       "--output", str(out), *h], "too short for 400 cutoff(s)"),
    }


CASES = ["ingest-missing-file", "ingest-empty-file", "ingest-missing-column", "ingest-non-numeric",
         "train-unknown-dataset", "train-unknown-family", "forecast-unknown-model", "forecast-unknown-alias",
         "forecast-missing-input", "forecast-bad-extension", "train-season-too-long", "backtest-model-without-alias",
         "backtest-family-without-horizon", "backtest-unknown-model", "backtest-too-many-windows"]


# --------------------------------------------------------------------------- in-process


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_error_exits_non_zero_with_one_error_line(case, bad_files, trained_home, tmp_path, capsys):
    out = tmp_path / "out.csv"
    argv, fragment = error_cases(bad_files, trained_home.home, trained_home.csv, out)[case]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert "Traceback" not in err
    assert not out.exists() and not out.with_suffix(".txt").exists()
    assert list(tmp_path.iterdir()) == []  # no partial or temporary output either


@pytest.mark.slow
def test_debug_raises_the_original_exception(bad_files, tmp_path):
    from forecasting.core.errors import DataError

    with pytest.raises(DataError, match="file not found"):
        main(["ingest", str(bad_files["missing"]), "--name", "x", "--home", str(tmp_path), "--debug"])


def test_options_before_the_subcommand_are_kept():
    # `forecasting --debug --home H ingest ...` once lost --debug and --home (the subparser's
    # defaults overwrote them); after the subcommand they work too, and the later one wins.
    p = build_parser()
    a = p.parse_args(["--debug", "--home", "/a", "ingest", "f.csv", "--name", "n"])
    assert (a.debug, a.home) == (True, "/a")
    a = p.parse_args(["ingest", "f.csv", "--name", "n", "--debug", "--home", "/b"])
    assert (a.debug, a.home) == (True, "/b")
    a = p.parse_args(["--home", "/a", "ingest", "f.csv", "--name", "n", "--home", "/b"])
    assert a.home == "/b"
    a = p.parse_args(["ingest", "f.csv", "--name", "n"])
    assert (a.debug, a.home) == (False, None)


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["train", DATASET])  # --horizon is required
    assert e.value.code == 2


@pytest.mark.slow
def test_ingest_then_forecast_to_csv_and_parquet(trained_home, tmp_path, capsys):
    home = str(trained_home.home)
    raw = tmp_path / "fresh.csv"
    synthetic_frame(n_series=N_SERIES, length=200, seed=7, start="2024-03-01").to_csv(raw, index=False)
    assert main(["--home", home, "ingest", str(raw), "--name", "fresh"]) == 0
    o = capsys.readouterr().out
    assert f"ingested {N_SERIES} series, {N_SERIES * 200} rows, freq h" in o
    processed = trained_home.home / "data" / "processed" / "fresh.parquet"
    assert processed.exists()

    frames = {}
    for ext in ("csv", "parquet"):
        out = tmp_path / "out" / f"forecast.{ext}"
        assert main(["forecast", f"{DATASET}-lstm", "--alias", "champion", "--input", str(processed),
                     "--output", str(out), "--home", home]) == 0
        o = capsys.readouterr().out
        assert f"forecast {N_SERIES} series with {DATASET}-lstm v" in o and str(out) in o
        frames[ext] = pd.read_csv(out, parse_dates=["ds"]) if ext == "csv" else pd.read_parquet(out)
    for f in frames.values():
        assert list(f.columns) == ["unique_id", "ds", "y_hat"]
        assert len(f) == N_SERIES * HORIZON
        assert f.groupby("unique_id")["ds"].min().eq(pd.Timestamp("2024-03-01") + pd.Timedelta(hours=200)).all()
    pd.testing.assert_frame_equal(frames["csv"], frames["parquet"], check_dtype=False, check_exact=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["forecast.csv", "forecast.parquet"]


# --------------------------------------------------------------------------- fresh processes

DRIVER = textwrap.dedent("""
    # Runs flows.cli.main for each argv with file descriptors 1 and 2 sent to files, so that
    # everything a case prints (Python, Prefect, MLflow, C libraries) is caught.
    import json, os, sys
    from flows.cli import main
    cases, outdir = json.loads(sys.argv[1]), sys.argv[2]
    result = {}
    for name, argv in cases.items():
        paths = [os.path.join(outdir, f"{name}.{s}") for s in ("out", "err")]
        saved = [os.dup(1), os.dup(2)]
        for fd, p in zip((1, 2), paths):
            f = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(f, fd)
            os.close(f)
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
        finally:
            sys.stdout.flush(); sys.stderr.flush()
            for fd, s in zip((1, 2), saved):
                os.dup2(s, fd)
                os.close(s)
        result[name] = [rc, *(open(p).read() for p in paths)]
    print(json.dumps(result))
""")


@pytest.mark.slow
def test_errors_print_exactly_one_line_in_a_fresh_process(bad_files, trained_home, prefect_api_url, tmp_path):
    """The whole of stdout and stderr of each error case, in one fresh interpreter (the first case
    sets the CLI's quiet logging before prefect and mlflow are imported, as a real run does)."""
    out = tmp_path / "out.csv"
    cases = error_cases(bad_files, trained_home.home, trained_home.csv, out)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps({k: v[0] for k, v in cases.items()}), str(tmp_path)],
        cwd=REPO, env=subprocess_env(PREFECT_API_URL=prefect_api_url), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (rc, stdout, stderr) in results.items():
        assert rc == EXIT_ERROR, (name, stderr)
        assert stdout == "", (name, stdout)
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert cases[name][1] in lines[0], (name, stderr)
    assert not out.exists()


@pytest.mark.slow
def test_executable_error_and_debug(bad_files, prefect_api_url, tmp_path):
    """The installed `forecasting` script: one `error:` line and exit 2; `--debug` (before the
    subcommand) shows the traceback."""
    argv = ["ingest", str(bad_files["missing"]), "--name", "x", "--home", str(tmp_path)]
    env = subprocess_env(PREFECT_API_URL=prefect_api_url)
    p = subprocess.run([str(FORECASTING_EXE), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == EXIT_ERROR
    assert p.stderr.splitlines() == [f"error: file not found: {bad_files['missing']}"], p.stderr
    assert p.stdout == ""

    p = subprocess.run([str(FORECASTING_EXE), "--debug", *argv], env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode not in (0, EXIT_ERROR)
    assert "Traceback (most recent call last)" in p.stderr
    assert "forecasting.core.errors.DataError: file not found" in p.stderr


def test_cuda_on_a_cpu_machine_is_a_clear_error(tmp_path, capsys):
    """`--device cuda` without CUDA fails with one line, before any training."""
    import torch

    from flows.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from forecasting.core.training import resolve_device

    with pytest.raises(Exception, match="CUDA is not available"):
        resolve_device("cuda")
    assert main(["train", "nothing-here", "--horizon", "4", "--device", "cuda", "--home", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error:") and "CUDA is not available" in err and "Traceback" not in err


@pytest.mark.slow
def test_an_output_never_overwrites_an_input_or_the_homes_data(trained_home, tmp_path, capsys):
    """forecast --output onto its --input (by its own path, a symlink or a hard link), and backtest --output
    into the home's processed data or stores, are refused before any work; nothing they read changes."""
    import hashlib

    home, csv, processed = trained_home.home, tmp_path / "in.csv", trained_home.processed
    shutil.copy(trained_home.csv, csv)
    (tmp_path / "link.csv").symlink_to(csv)
    os.link(csv, tmp_path / "hard.csv")

    def digest(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    before = {p: digest(p) for p in (csv, processed)}
    h = ["--home", str(home)]
    cases = [
        (["forecast", f"{DATASET}-gru", *h, "--input", str(csv), "--output", str(csv)], "it is the input file"),
        (["forecast", f"{DATASET}-gru", *h, "--input", str(tmp_path / "link.csv"), "--output", str(csv)],
         "it is the input file"),
        (["forecast", f"{DATASET}-gru", *h, "--input", str(tmp_path / "hard.csv"), "--output", str(csv)],
         "it is the input file"),
        (["forecast", f"{DATASET}-gru", *h, "--input", str(csv), "--output", str(tmp_path / "o.csv"), "--plot",
          str(home / "mlruns" / "fan.png")], "which holds the home's datasets and stores"),
        (["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "2", "--output", str(processed),
          *h], "it is the input file"),
        (["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "2", "--output",
          str(processed.with_name("other.parquet")), *h], "which holds the home's datasets and stores"),
        (["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "2", "--output",
          str(home / "mlruns" / "bt.parquet"), *h], "which holds the home's datasets and stores"),
    ]
    for argv, fragment in cases:
        assert main(argv) == EXIT_ERROR, argv
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and fragment in lines[0], (argv, lines)
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / "o.csv").exists() and not (home / "mlruns" / "bt.parquet").exists()


@pytest.mark.slow
def test_a_command_keeps_prefect_and_mlflow_state_in_the_home_not_the_users_home(tmp_path):
    """Without PREFECT_HOME, Prefect's database (it keeps flow-run parameters) goes under the home; MLflow's
    telemetry stays off, so nothing is written to ~/.config/mlflow; the user's home stays untouched."""
    user, home = tmp_path / "user", tmp_path / "home"
    user.mkdir()
    csv = write_csv(tmp_path / "s.csv", synthetic_frame(n_series=2, length=60))
    env = {k: v for k, v in subprocess_env(HOME=str(user)).items() if k not in ("PREFECT_HOME", "PREFECT_API_URL")}
    r = subprocess.run([FORECASTING_EXE, "ingest", str(csv), "--name", "s", "--home", str(home)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (home / ".prefect").is_dir() and any((home / ".prefect").iterdir())
    assert list(user.iterdir()) == []  # no ~/.prefect, no ~/.config/mlflow


@pytest.mark.slow
def test_bad_options_are_refused_before_any_store_exists(prefect_api_url, tmp_path, capsys):
    """Each refused with one error line naming the option; the home gets no MLflow store or study."""
    home = tmp_path / "home"
    csv = write_csv(tmp_path / "s.csv", synthetic_frame(n_series=2, length=300))
    assert main(["ingest", str(csv), "--name", "s", "--home", str(home)]) == 0
    train = ["train", "s", "--horizon", "12", "--home", str(home)]
    cases = {
        "--trials must be at least 1": [*train, "--trials", "0"],
        "--timeout must be a positive number": [*train, "--timeout", "0"],
        "--timeout must be a positive number of seconds, got -5": [*train, "--timeout", "-5"],
        "--max-lookback must be at least 2, got 0": [*train, "--max-lookback", "0"],
        "--max-lookback must be at least 2, got 1": [*train, "--max-lookback", "1"],
        "--max-train-windows must be at least 1": [*train, "--max-train-windows", "0"],
        "--backtest-step must be at least 1": [*train, "--backtest-step", "0"],
        "argument --backtest-windows: must be a whole number >= 1, got '0'": [*train, "--backtest-windows", "0"],
        "--storage foo://bar: not a database URL": [*train, "--storage", "foo://bar"],
        "--storage postgresql+nosuchdriver://u:***@127.0.0.1/x": [
            *train, "--storage", "postgresql+nosuchdriver://u:hunter2zz@127.0.0.1/x"],
        "--step must be at least 1": ["backtest", "s", "--family", "gru", "--horizon", "12", "--step", "0",
                                      "--home", str(home)],
        "no registered model named 'nosuch'": ["forecast", "nosuch", "--input", str(csv), "--output",
                                               str(tmp_path / "o.csv"), "--home", str(home)],
    }
    for fragment, argv in cases.items():
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusal of a value: usage and one error line, exit 2
            code = exc.code
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:") or ": error: " in ln]
        assert "hunter2zz" not in err  # the password is never shown
        assert code == EXIT_ERROR and len(lines) == 1 and fragment in lines[0], (argv, err)
        assert "Traceback" not in err
        assert not (home / "mlruns").exists(), argv  # no store, no study, no FAILED run


def test_each_kind_of_failure_has_its_own_exit_code_and_one_line():
    import errno

    import sqlalchemy.exc

    from flows.cli import EXIT_INTERNAL, EXIT_OS, EXIT_STORE, failure

    assert failure(OSError(errno.ENOSPC, "No space left on device", "/h/data/x.parquet")) == (
        EXIT_OS, "No space left on device: /h/data/x.parquet (free some space)")
    assert failure(OSError(errno.EROFS, "Read-only file system", "/h"))[1].endswith("(the folder is read-only)")
    code, text = failure(sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked\nmore")))
    assert code == EXIT_STORE and text.startswith("the database (the Optuna storage") and "\n" not in text
    mlflow_like = type("MlflowException", (Exception,), {"__module__": "mlflow.exceptions"})
    assert failure(mlflow_like("Could not find a registered tracking store"))[0] == EXIT_STORE
    code, text = failure(RuntimeError("the temporary Prefect server did not answer within 120 s"))
    assert code == EXIT_STORE and "PREFECT_API_URL" in text  # a loaded machine: what to do instead
    code, text = failure(KeyError("x"))
    assert code == EXIT_INTERNAL and "rerun with --debug" in text
    assert len({EXIT_INTERNAL, EXIT_ERROR, EXIT_OS, EXIT_STORE}) == 4


@pytest.mark.slow
def test_an_output_that_is_a_directory_and_a_broken_store_end_in_one_line(trained_home, tmp_path, capsys,
                                                                        monkeypatch):
    from flows.cli import EXIT_OS, EXIT_STORE

    (tmp_path / "out.csv").mkdir()
    fc = ["forecast", f"{DATASET}-gru", "--home", str(trained_home.home), "--input", str(trained_home.csv)]
    assert main([*fc, "--output", str(tmp_path / "out.csv")]) == EXIT_OS
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [ln for ln in err.splitlines() if ln]
    assert "Is a directory" in err and "Traceback" not in err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "garbage://x")
    assert main([*fc, "--output", str(tmp_path / "o.csv")]) == EXIT_STORE
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "MLflow store" in err and "Traceback" not in err


@pytest.mark.slow
def test_ctrl_c_during_training_says_interrupted_without_a_traceback(tmp_path):
    import signal

    home = tmp_path / "home"
    csv = write_csv(tmp_path / "s.csv", synthetic_frame(n_series=2, length=400))
    env = subprocess_env()
    subprocess.run([FORECASTING_EXE, "ingest", str(csv), "--name", "s", "--home", str(home)], env=env, check=True,
                   capture_output=True)
    p = subprocess.Popen([FORECASTING_EXE, "train", "s", "--home", str(home), "--horizon", "12", "--trials", "50",
                          "--max-epochs", "50", "--threads", "1", "--verbose"], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal would
    seen = []
    for line in p.stderr:  # wait until a trial is training (--verbose: a line per epoch)
        seen.append(line)
        if " epoch " in line:
            break
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=120) == 130, "".join(seen) + rest
    assert "interrupted" in rest and "Traceback" not in "".join(seen) + rest


@pytest.mark.slow
def test_a_forecast_whose_run_cannot_be_recorded_says_the_file_was_written(trained_home, tmp_path, capsys,
                                                                           monkeypatch):
    """The output and the store must not silently disagree: when logging the run fails after the file
    is written, the one error line says where the forecasts are (exit 5, a store failure)."""
    from flows.cli import EXIT_STORE
    from forecasting.tracking import runs

    def store_down(*a, **k):
        raise OSError("attempt to write a readonly database")

    monkeypatch.setattr(runs, "log_forecast_run", store_down)
    out = tmp_path / "fc.csv"
    code = main(["forecast", f"{DATASET}-gru", "--home", str(trained_home.home), "--input", str(trained_home.csv),
                 "--output", str(out)])
    err = capsys.readouterr().err
    assert code == EXIT_STORE and out.is_file() and err.count("error:") == 1, err
    assert f"were written to {out}, but the run could not be recorded" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_champion_whose_artifacts_were_deleted_ends_in_one_line(trained_home, tmp_path, capsys, monkeypatch):
    """A registered version whose model files are gone (deleted by hand, a lost volume): one error line
    naming the problem and a store/OS exit code, not a traceback."""
    import shutil as _shutil

    import pandas as _pd

    from flows.cli import EXIT_OS, EXIT_STORE
    from forecasting.tracking import registry, runs

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs.configure(trained_home.home)
    f, _ = registry.load_forecaster(f"{DATASET}-gru", "champion")
    exp = runs.ensure_experiment("broken", trained_home.home)
    run_id = runs.start_run(exp, "to-break")
    df = _pd.read_csv(trained_home.csv, parse_dates=["ds"])
    uri = registry.log_model(run_id, f, registry.input_example(df, f.cfg.model.lookback))
    runs.end_run(run_id)
    registry.register(uri, "broken-gru", "val_backtest_mase", 1.0)
    artifacts = next(p for p in (trained_home.home / "mlruns" / "artifacts" / "broken").rglob("*") if p.is_dir())
    _shutil.rmtree(artifacts)
    code = main(["forecast", "broken-gru", "--home", str(trained_home.home), "--input", str(trained_home.csv),
                 "--output", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code in (EXIT_OS, EXIT_STORE, EXIT_ERROR) and err.count("error:") == 1, err
    assert "Traceback" not in err and not (tmp_path / "o.csv").exists()


@pytest.mark.slow
def test_a_tracking_server_that_does_not_answer_is_one_line_at_once(trained_home, tmp_path, capsys, monkeypatch):
    """MLFLOW_TRACKING_URI pointing at nothing: refused after one health check, not after minutes of
    MLflow's retries ending in a traceback."""
    import time as _time

    from flows.cli import EXIT_STORE
    from flows.server import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    t0 = _time.perf_counter()
    code = main(["forecast", f"{DATASET}-gru", "--home", str(trained_home.home), "--input", str(trained_home.csv),
                 "--output", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == EXIT_STORE and err.count("error:") == 1 and "does not answer" in err, err
    assert _time.perf_counter() - t0 < 60 and not (tmp_path / "o.csv").exists()


def test_a_failure_while_ctrl_c_is_handled_is_still_an_interruption(tmp_path, capsys, monkeypatch):
    # Optuna's tell of a trial stopped by Ctrl-C can fail on the store (SQLite busy under load); its
    # finally block then raises AssertionError("Should not reach."), which replaces the interrupt.
    import signal

    import flows.cli as cli

    def stopped(args, home):
        try:
            signal.raise_signal(signal.SIGINT)  # the user's Ctrl-C, through the command's handler
        except KeyboardInterrupt:
            pass  # Optuna records the stopped trial ...
        raise AssertionError("Should not reach.")  # ... and its tell fails: no interrupt in the context

    monkeypatch.setitem(cli.COMMANDS, "models", stopped)
    # As in a fresh command: Python's own handler in force (earlier tests' libraries may have left a
    # C-level one, which Python cannot wrap); whatever was there is put back after.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli.main(["models", "--home", str(tmp_path)]) == cli.EXIT_INTERRUPTED == 130
        assert capsys.readouterr().err.strip() == "interrupted"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the command put it back
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


@pytest.mark.parametrize("command, heartbeat", [("forecast", None), ("ingest", None), ("train", 180)])
def test_short_commands_run_their_flows_without_heartbeats(command, heartbeat, prefect_api_url, monkeypatch):
    """A flow joins its heartbeat thread on exit, which sleeps in 1 s steps: ingest and forecast run
    without it (up to 1 s less per command); train keeps Prefect's default; a user's setting wins."""
    from prefect import flow
    from prefect.settings import get_current_settings

    from flows.cli import SHORT_FLOW_COMMANDS
    from flows.server import HEARTBEAT_ENV, Pending, prefect_api

    @flow
    def seen() -> int | None:  # what the flow engine reads when the run starts
        return get_current_settings().flows.heartbeat_frequency

    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    with prefect_api(pending=Pending(prefect_api_url, ready=True), heartbeats=command not in SHORT_FLOW_COMMANDS):
        assert seen() == heartbeat
    monkeypatch.setenv(HEARTBEAT_ENV, "60")
    with prefect_api(pending=Pending(prefect_api_url, ready=True), heartbeats=False):
        assert seen() == 60  # the user's own setting

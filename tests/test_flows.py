"""The flows end to end: ingest -> train -> forecast against a temporary Prefect API.

Runs in a temporary home: Prefect through `prefect_test_harness` (session fixture) with its own
PREFECT_HOME, MLflow's store at `<home>/mlruns/mlflow.db` (MLFLOW_TRACKING_URI unset). Tiny budgets.
"""

from __future__ import annotations

import math
import time

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import pandas as pd
import pytest
from flows_fixtures import DATASET, HORIZON, N_SERIES

pytest_plugins = ["flows_fixtures"]

pytestmark = pytest.mark.slow

FAMILIES = ("gru", "lstm")


def client_for(home):
    from mlflow import MlflowClient

    from forecasting.tracking import runs

    runs.configure(home)
    return MlflowClient()


def champion(client, name: str):
    return client.get_model_version_by_alias(name, "champion")


def test_ingest_writes_the_processed_dataset(trained_home):
    r = trained_home.ingest
    assert (r["n_series"], r["n_rows"], r["freq"], r["n_filled"]) == (N_SERIES, N_SERIES * 500, "h", 0)
    assert trained_home.processed == trained_home.home / "data" / "processed" / f"{DATASET}.parquet"
    df = pd.read_parquet(trained_home.processed)
    assert list(df.columns[:3]) == ["unique_id", "ds", "y"]
    assert sorted(df["unique_id"].unique()) == ["s0", "s1", "s2"]
    assert trained_home.processed.with_suffix(".json").exists()


def test_store_is_under_home_when_no_tracking_uri_is_set(trained_home):
    from forecasting.tracking.runs import tracking_uri

    assert tracking_uri(trained_home.home) == f"sqlite:///{trained_home.home / 'mlruns' / 'mlflow.db'}"
    assert (trained_home.home / "mlruns" / "mlflow.db").exists()


BASELINES = ("naive", "seasonal_naive_24", "seasonal_naive_168", "linear")


def combined_kept(trained_home) -> bool:
    """What the families' combination check recorded on the pipeline run: combined or not."""
    params = client_for(trained_home.home).get_run(trained_home.train["parent_run_id"]).data.params
    kept = params["combined_families"].split(",")
    return len(kept) > 1 and float(params["combine_check_combined"]) <= float(params["combine_check_single"])


def models_of(trained_home) -> tuple[str, ...]:
    return (*FAMILIES, "combined") if combined_kept(trained_home) else FAMILIES


def test_comparison_table_has_both_families_and_the_baselines(trained_home):
    table = trained_home.train["table"]
    models = models_of(trained_home)
    assert list(table["model"]) == [*models, *BASELINES]
    for col in ("mae", "rmse", "smape", "mase", "val_backtest_mase"):
        assert table[col].map(math.isfinite).all(), col
    # The summary names the best baseline (lowest test MASE) and each model's margin to it.
    summary = trained_home.train["summary"]
    base = table.set_index("model").loc[list(BASELINES), "mase"]
    assert summary["best_baseline"] == base.idxmin()
    assert set(summary["margins"]) == set(models)
    for fam in models:
        assert summary["margins"][fam] == pytest.approx(table.set_index("model").loc[fam, "mase"] / base.min() - 1)
    assert (table.set_index("model").loc[list(models), "params"] > 0).all()


def test_first_train_registers_each_family_as_champion(trained_home):
    regs = {r["name"]: r for r in trained_home.train["registrations"]}
    models = models_of(trained_home)
    assert set(regs) == {f"{DATASET}-{f}" for f in models}
    client = client_for(trained_home.home)
    table = trained_home.train["table"].set_index("model")
    for family in models:
        name = f"{DATASET}-{family}"
        r = regs[name]
        assert (r["version"], r["alias"], r["previous_champion"], r["metric"]) == (
            1, "champion", None, "val_backtest_mase")
        mv = champion(client, name)
        assert str(mv.version) == "1"
        assert float(mv.tags["test_mase"]) == pytest.approx(table.loc[family, "mase"])
        assert float(mv.tags["val_backtest_mase"]) == pytest.approx(table.loc[family, "val_backtest_mase"])
        assert mv.tags["horizon"] == str(HORIZON) and mv.tags["frequency"] == "h"
        assert mv.tags["family"] == family
        assert mv.description.startswith("Scores of this version") and "\n- val_backtest_mase: " in mv.description
        model = client.get_registered_model(name)
        assert model.tags["dataset"] == DATASET and model.tags["horizon"] == str(HORIZON)
        assert model.tags["frequency"] == "h" and model.tags["gate_metric"] == "val_backtest_mase"
        assert "champion moves only on val_backtest_mase" in model.description


def test_the_families_combination_is_registered_and_forecasts_the_mean_of_their_members(trained_home, tmp_path):
    """On this panel the check keeps the combination (recorded on the pipeline run): `syn-combined` holds
    every member of the GRU's and the LSTM's final models and forecasts their mean, through the
    registry and the forecast flow."""
    from flows.forecast import forecast_flow
    from forecasting.api.ensemble import members
    from forecasting.tracking import registry

    assert combined_kept(trained_home)
    client_for(trained_home.home)
    combined, _ = registry.load_forecaster(f"{DATASET}-combined")
    parts = [m for f in FAMILIES for m in members(registry.load_forecaster(f"{DATASET}-{f}")[0])]
    assert len(combined.members) == len(parts) >= 2
    assert {m.cfg.family for m in combined.members} == set(FAMILIES)
    history = pd.read_csv(trained_home.csv, parse_dates=["ds"])
    want = pd.concat([p.predict(history)[0] for p in parts]).groupby(["unique_id", "ds"], as_index=False)["y_hat"].mean()
    out = tmp_path / "syn-combined.csv"
    r = forecast_flow(f"{DATASET}-combined", str(trained_home.csv), str(out), home=str(trained_home.home))
    got = pd.read_csv(out, parse_dates=["ds"])
    assert r["n_forecast"] == N_SERIES and len(got) == N_SERIES * HORIZON
    merged = got.merge(want, on=["unique_id", "ds"], suffixes=("", "_mean"))
    assert len(merged) == len(got)
    assert merged["y_hat"].to_numpy() == pytest.approx(merged["y_hat_mean"].to_numpy(), rel=1e-5)


def test_forecast_flow_writes_h_steps_per_series(trained_home, tmp_path):
    from flows.forecast import forecast_flow

    out = tmp_path / "out" / "syn-gru.parquet"
    r = forecast_flow(f"{DATASET}-gru", str(trained_home.csv), str(out), home=str(trained_home.home))
    assert r["output"] == str(out) and r["n_forecast"] == N_SERIES and r["skipped"] == []
    assert r["version"] == str(champion(client_for(trained_home.home), f"{DATASET}-gru").version)

    f = pd.read_parquet(out)
    assert list(f.columns) == ["unique_id", "ds", "y_hat"]
    assert len(f) == N_SERIES * HORIZON
    assert f["y_hat"].map(math.isfinite).all()
    hist = pd.read_csv(trained_home.csv, parse_dates=["ds"])
    last = hist.groupby("unique_id")["ds"].max()
    for uid, g in f.groupby("unique_id"):
        expected = pd.date_range(last[uid] + pd.Timedelta(hours=1), periods=HORIZON, freq="h")
        assert list(g["ds"]) == list(expected), uid
    # Nothing else was left in the output folder (atomic write, no temporary file).
    assert [p.name for p in out.parent.iterdir()] == [out.name]

    # The batch forecast is recorded in MLflow.
    client = client_for(trained_home.home)
    exp = client.get_experiment_by_name(f"forecast-{DATASET}-gru")
    run = client.get_run(r["run_id"])
    assert run.info.experiment_id == exp.experiment_id
    assert run.data.metrics["series_forecast"] == N_SERIES


def test_forecast_command_with_intervals_and_a_fan_chart(trained_home, tmp_path, capsys):
    """`forecast --level 80 95 --plot F.png`: one lo/hi pair per level around the unchanged point
    forecast, nested bands, and a PNG; a level the model was not calibrated at is one error line."""
    from flows.cli import main

    common = [f"{DATASET}-gru", "--input", str(trained_home.csv), "--home", str(trained_home.home)]
    point, banded, png = tmp_path / "p.csv", tmp_path / "b.csv", tmp_path / "fan.png"
    assert main(["forecast", *common, "--output", str(point)]) == 0
    assert main(["forecast", *common, "--output", str(banded), "--level", "80", "95", "--plot", str(png),
                 "--plot-series", "s1"]) == 0
    a, b = pd.read_csv(point), pd.read_csv(banded)
    assert list(b.columns) == ["unique_id", "ds", "y_hat", "y_hat-lo-80", "y_hat-hi-80", "y_hat-lo-95", "y_hat-hi-95"]
    pd.testing.assert_frame_equal(a, b[a.columns])  # the point forecast is unchanged
    assert ((b["y_hat-lo-95"] <= b["y_hat-lo-80"]) & (b["y_hat-lo-80"] <= b["y_hat"])
            & (b["y_hat"] <= b["y_hat-hi-80"]) & (b["y_hat-hi-80"] <= b["y_hat-hi-95"])).all()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["forecast", *common, "--output", str(tmp_path / "x.csv"), "--level", "99"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "level 99 was not calibrated" in err and "\n" not in err
    assert main(["forecast", *common, "--output", str(tmp_path / "y.csv"), "--plot", str(tmp_path / "f.jpg")]) == 2
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "y.csv").exists()


def test_train_table_shows_interval_scores_next_to_the_baselines(trained_home):
    table = trained_home.train["table"]
    for col in ("coverage_80", "coverage_95", "msis_95"):
        assert table[col].notna().all() and table[col].between(0, 1e6).all(), col
    assert (table["coverage_80"] <= table["coverage_95"]).all()


def test_forecast_of_a_shorter_history_skips_short_series(trained_home, tmp_path):
    """A series shorter than the lookback is skipped with its reason, the others are forecast."""
    from flows.forecast import forecast_flow

    hist = pd.read_csv(trained_home.csv)
    short = pd.concat([hist[hist.unique_id != "s2"], hist[hist.unique_id == "s2"].tail(3)])
    src = tmp_path / "short.csv"
    short.to_csv(src, index=False)
    out = tmp_path / "f.csv"
    r = forecast_flow(f"{DATASET}-lstm", str(src), str(out), home=str(trained_home.home))
    assert r["n_forecast"] == 2
    assert [uid for uid, _ in r["skipped"]] == ["s2"]
    f = pd.read_csv(out)
    assert sorted(f["unique_id"].unique()) == ["s0", "s1"] and len(f) == 2 * HORIZON


def test_forecast_with_every_series_skipped_exits_3_and_writes_nothing(trained_home, tmp_path, capsys):
    from flows.cli import EXIT_NOTHING, main

    hist = pd.read_csv(trained_home.csv)
    src = tmp_path / "tiny.csv"
    hist.groupby("unique_id").tail(3).to_csv(src, index=False)
    out = tmp_path / "f.csv"
    assert main(["forecast", f"{DATASET}-gru", "--input", str(src), "--output", str(out),
                 "--home", str(trained_home.home)]) == EXIT_NOTHING == 3
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "all 3 were skipped" in line and "'s0': 3 points, needs lookback" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.csv"]


def test_register_promotes_only_a_better_model(trained_home):
    """`register`: champion only when the metric beats the champion's recorded one, else challenger."""
    from forecasting.tracking import registry

    client = client_for(trained_home.home)
    model_uri = client.get_model_version(f"{DATASET}-gru", "1").source  # the logged model, models:/m-...
    name = "promotion-check"
    steps = [(1.0, "champion", "1", None), (2.0, "challenger", "1", 1.0), (0.5, "champion", "3", 1.0),
             (0.5, "challenger", "3", 0.5)]  # a tie does not promote
    for i, (value, alias, champion_version, previous) in enumerate(steps, start=1):
        r = registry.register(model_uri, name, "mase", value)
        assert (r["version"], r["alias"], r["previous_champion"]) == (i, alias, previous)
        assert str(champion(client, name).version) == champion_version
        assert str(client.get_model_version_by_alias(name, alias).version) == str(i)
    assert registry.champion_value(name, "mase") == 0.5


def test_a_new_version_is_gated_on_the_rescored_champion_not_its_tag(trained_home):
    """What a second `train` relies on: the new version's metric is compared with the current champion
    re-scored from its own model (`rescore`), not with the champion's recorded tag. Each outcome is
    arranged with chosen scores: worse stays challenger, better moves the champion, the next gate
    re-scores the new champion's model, and a model that cannot be re-scored falls back to its tag."""
    from forecasting.api.forecaster import Forecaster
    from forecasting.tracking import registry

    client = client_for(trained_home.home)
    gru, lstm = (client.get_model_version(f"{DATASET}-{f}", "1").source for f in FAMILIES)
    name = "rescore-gate"
    rescored = {"gru": 0.5, "lstm": 2.0}  # what each champion scores when re-scored on "today's" data
    seen: list[str] = []

    def rescore(forecaster: Forecaster) -> float:
        seen.append(forecaster.cfg.family)
        return rescored[forecaster.cfg.family]

    def cannot_rescore(forecaster: Forecaster) -> float:
        seen.append(forecaster.cfg.family)
        raise KeyError("unknown series")  # e.g. the champion was trained on other series

    # (model, its value, rescore, expected alias, champion version after, previous champion's value)
    steps = [
        (gru, 1.0, rescore, "champion", "1", None),  # no champion yet: nothing to re-score
        (lstm, 0.8, rescore, "challenger", "1", 0.5),  # beats the champion's tag (1.0), not its re-score
        (lstm, 0.4, rescore, "champion", "3", 0.5),  # beats the re-score: the alias moves
        (gru, 1.5, rescore, "champion", "4", 2.0),  # v3 (lstm) re-scored, not v1: 1.5 < 2.0 though > 0.4
        (lstm, 1.6, cannot_rescore, "challenger", "4", 1.5),  # falls back to v4's tag 1.5
    ]
    for version, (uri, value, score, alias, champion_version, previous) in enumerate(steps, start=1):
        r = registry.register(uri, name, "val_backtest_mase", value, rescore=score)
        assert (r["version"], r["alias"], r["previous_champion"]) == (version, alias, previous), r
        assert str(champion(client, name).version) == champion_version
        assert str(client.get_model_version_by_alias(name, alias).version) == str(version)
        assert client.get_model_version(name, str(version)).source == uri
    assert seen == ["gru", "gru", "lstm", "gru"]  # always the champion of the moment, loaded from the registry
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "5"
    assert registry.champion_value(name, "val_backtest_mase") == 1.5
    assert registry.champion_value(name, "val_backtest_mase", rescore) == 0.5  # v4 is a gru model


def test_backtest_of_the_registered_champion(trained_home, tmp_path, capsys):
    """`forecasting backtest DATASET --model NAME@ALIAS`: the cross-validation frame, written atomically,
    and a `backtest` run in MLflow with its tables and plot."""
    from flows.cli import main

    out = tmp_path / "cv.csv"
    home = str(trained_home.home)
    started_ms = int(time.time() * 1000)  # the home is shared: other tests' backtests may be in it
    assert main(["backtest", DATASET, "--model", f"{DATASET}-gru@champion", "--windows", "3", "--step", "6",
                 "--output", str(out), "--home", home, "--level", "80", "95"]) == 0
    printed = capsys.readouterr().out
    assert f"{DATASET}-gru@champion (v" in printed and "seasonal_naive_24" in printed
    assert "coverage_95" in printed and "msis_95" in printed  # the model's stored intervals, scored
    assert f"| {DATASET}-gru@champion (v" in printed and "| y_hat |" not in printed  # the table names the model
    cv = pd.read_csv(out, parse_dates=["ds", "cutoff"])
    assert list(cv.columns[:5]) == ["unique_id", "ds", "cutoff", "y", "y_hat"]
    assert {"y_hat-lo-80", "y_hat-hi-80", "y_hat-lo-95", "y_hat-hi-95"} <= set(cv.columns)
    assert ((cv["y_hat-lo-95"] <= cv["y_hat-lo-80"]) & (cv["y_hat-hi-80"] <= cv["y_hat-hi-95"])).all()
    assert len(cv) == N_SERIES * 3 * HORIZON
    assert sorted(cv["cutoff"].unique().tolist()) == sorted(cv.groupby("cutoff").size().index.tolist())
    assert (cv.groupby("unique_id")["cutoff"].nunique() == 3).all()
    assert [p.name for p in tmp_path.iterdir()] == ["cv.csv"]  # no temporary file left beside it

    client = client_for(trained_home.home)
    exp = client.get_experiment_by_name(f"{DATASET}-h{HORIZON}")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.kind = 'backtest' and "
                              f"attributes.start_time >= {started_ms}")
    # cutoffs in the last rows: after the rows the model was trained on (its version tag `train_end`)
    assert len(runs) == 1 and runs[0].data.tags["in_sample"] == "False"
    assert "val_backtest_mase" in runs[0].data.metrics
    files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "backtest")}
    assert {"backtest/metrics_by_cutoff.csv", "backtest/backtest.png", "backtest/forecasts.csv",
            "backtest/fan_chart.png"} <= files


def test_backtest_of_a_family_fitted_before_the_first_cutoff(trained_home, capsys):
    from flows.backtest import backtest_flow
    from forecasting.api.jobs import BacktestJob

    r = backtest_flow(BacktestJob(DATASET, family="lstm", windows=2, horizon=HORIZON, max_epochs=1, levels=(80,)),
                      str(trained_home.home))
    assert r["cutoffs"] == 2 and not r["in_sample"]
    model = r["metrics"].set_index("predictor").loc["y_hat"]
    assert 0 <= model["coverage_80"] <= 1 and model["msis_80"] > 0  # calibrated before the first cutoff
    assert set(r["metrics"]["predictor"]) >= {"y_hat", "naive", "seasonal_naive_24", "linear"}
    assert r["metrics"]["mase"].map(math.isfinite).all()
    # The same cutoffs backtested with the registered model: the baselines that fit nothing score
    # exactly alike in both modes (the MASE scales come from every row before the first cutoff).
    reg = backtest_flow(BacktestJob(DATASET, model=f"{DATASET}-lstm@champion", windows=2), str(trained_home.home))
    fixed = ["naive", "seasonal_naive_24"]
    pd.testing.assert_frame_equal(r["metrics"].set_index("predictor").loc[fixed, ["mase", "smape", "mae", "mse"]],
                                  reg["metrics"].set_index("predictor").loc[fixed, ["mase", "smape", "mae", "mse"]])


def test_train_prints_every_step_with_its_time(trained_home, capfd):
    """Between the last trial line and the table: refit, backtest, baselines and registration each
    say when they start and how long they took; a reused study says how many trials it holds."""
    from flows.cli import main

    assert main(["train", DATASET, "--horizon", str(HORIZON), "--models", "gru", "--trials", "2",
                 "--max-epochs", "2", "--max-train-windows", "128", "--device", "cpu",
                 "--home", str(trained_home.home)]) == 0
    captured = capfd.readouterr()
    err = captured.err
    assert "the study already holds 2 finished trial(s) of 2: no new trial needed" in err
    for label in ("refit gru", "backtest gru over the validation part", "baselines (naive, seasonal naive, ridge)",
                  "register and gate the champion"):
        assert f"{DATASET}: {label}" in err and "done in " in err, label
    assert "Best baseline on test mase:" in captured.out and "margin to it" in captured.out
    assert "| vs best baseline |" in captured.out  # the short table, margins in percent
    assert "val_backtest_mse_std" not in captured.out  # the full one stays in MLflow


def test_a_rerun_on_unchanged_inputs_registers_nothing_and_says_why(trained_home, capfd):
    """The same `train` twice on the same data and code: the second registers no version, says which
    version already holds the model, and `--force` registers one anyway."""
    from flows.cli import main

    client = client_for(trained_home.home)
    name = f"{DATASET}-gru"
    argv = ["train", DATASET, "--horizon", str(HORIZON), "--models", "gru", "--trials", "2", "--max-epochs", "2",
            "--max-train-windows", "96", "--device", "cpu", "--level", "--home", str(trained_home.home)]
    assert main(argv) == 0
    first = max(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert f"registered {name} v{first} -> @" in capfd.readouterr().out
    assert main(argv) == 0
    out = capfd.readouterr().out
    assert f"{name}: unchanged since v{first}" in out and "nothing registered (--force" in out
    assert max(int(v.version) for v in client.search_model_versions(f"name = '{name}'")) == first
    assert main([*argv, "--force"]) == 0
    out = capfd.readouterr().out
    assert f"registered {name} v{first + 1} -> @" in out and "than champion v" in out


def test_models_prints_what_the_registry_holds(trained_home, capsys):
    from flows.cli import main

    client = client_for(trained_home.home)
    assert main(["models", DATASET, "--home", str(trained_home.home)]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES:
        name = f"{DATASET}-{family}"
        assert f"{name}: dataset {DATASET}, horizon {HORIZON}, frequency h, family {family}" in out
        held = client.search_model_versions(f"name = '{name}'")
        assert f"{len(held)} version(s)" in out
        champ = champion(client, name)
        row = next(ln for ln in out.splitlines() if ln.startswith(f"| {champ.version} | ") and "champion" in ln)
        assert f" {float(champ.tags['val_backtest_mase']):.4g} " in row  # its gate score, as to_markdown shows it
    assert main(["models", "no-such-dataset", "--home", str(trained_home.home)]) == 0
    assert "no registered model of dataset 'no-such-dataset'" in capsys.readouterr().out


def test_experiments_open_as_model_development_and_runs_say_what_they_are(trained_home):
    """MLflow 3's UI opens an experiment without a kind as GenAI (traces); ours carry the model-development
    kind, and every run a description and a source."""
    client = client_for(trained_home.home)
    exp = client.get_experiment_by_name(f"{DATASET}-h{HORIZON}")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("Forecasting experiment")
    kinds = set()
    for run in client.search_runs([exp.experiment_id], max_results=500):
        tags = run.data.tags
        kinds.add(tags.get("kind"))
        assert len(tags.get("mlflow.note.content", "")) > 40, (tags.get("kind"), run.info.run_name)
        assert tags["mlflow.source.name"].startswith("forecasting") and tags["code_version"]
        if tags.get("kind") in ("trial", "final"):
            assert tags["family"] in tags["mlflow.note.content"]
        if tags.get("kind") == "pipeline" and run.info.run_id == trained_home.train["parent_run_id"]:
            table = trained_home.train["table"].set_index("model")
            for family in FAMILIES:  # the run list shows each family's scores without opening the run
                assert run.data.metrics[f"{family}.test_mase"] == pytest.approx(table.loc[family, "mase"])
                assert run.data.metrics[f"{family}.val_backtest_mase"] == pytest.approx(
                    table.loc[family, "val_backtest_mase"])
            assert run.data.metrics["best_baseline.test_mase"] == pytest.approx(
                trained_home.train["summary"]["best_baseline_value"])
    assert {"pipeline", "trial", "final", "baseline"} <= kinds


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(trained_home, tmp_path):
    """The README's "Load a registered model" snippet, run in a folder laid out as after `make demo`
    (mlruns/ and data/processed/etth1.parquet), with the model name of this test's home."""
    import os
    import re
    import subprocess
    import sys

    from flows_fixtures import REPO

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Load a registered model"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "history = " in code and "model.predict(history" in code  # nothing undefined
    (tmp_path / "data" / "processed").mkdir(parents=True)
    (tmp_path / "mlruns").symlink_to(trained_home.home / "mlruns")
    (tmp_path / "data" / "processed" / "etth1.parquet").symlink_to(trained_home.processed)
    code = code.replace("models:/etth1-gru@champion", f"models:/{DATASET}-gru@champion")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "y_hat-lo-80" in r.stdout and "y_hat-hi-95" in r.stdout


def test_each_final_model_records_the_ensemble_check_that_chose_its_members(trained_home):
    """The default job combines each family's 3 best trials where the check on held-out validation
    halves finds that no worse than the best alone: the final run records both scores and the choice,
    and the registered model has that many members."""
    from forecasting.tracking import registry

    client = client_for(trained_home.home)
    for family in FAMILIES:
        params = client.get_run(champion(client, f"{DATASET}-{family}").run_id).data.params
        single, combined = float(params["ensemble_check_single"]), float(params["ensemble_check_combined"])
        kept = int(params["ensemble_check_kept"])
        assert params["ensemble_check_candidates"] == "2" and params["ensemble_check_metric"] == "mase"
        assert kept == (3 if combined <= single else 1)
        size = int(params["ensemble_size"])
        assert size == 1 if kept == 1 else 1 <= size <= 2  # two trials; a far worse one is left out
        forecaster, _ = registry.load_forecaster(f"{DATASET}-{family}", "champion")
        assert len(getattr(forecaster, "members", [forecaster])) == size


def test_a_family_is_finished_beside_the_next_ones_tuning(prefect_api_url, monkeypatch):
    """The train flow finishes a family (ensemble check, refit, test score, backtest, intervals) in a thread beside
    the next family's tuning: the GRU's finishing waits until the LSTM's tuning has started, which a
    flow that finished each family before tuning the next would never reach; rows keep job order."""
    import threading
    from types import SimpleNamespace

    from prefect import flow, task

    import flows.train as T

    lstm_tuning = threading.Event()

    def tune(ctx, job, df, split, family):
        if family == "lstm":
            lstm_tuning.set()
        return family

    @task
    def finish(ctx, job, df, split, result, family):
        if family == "gru":
            assert lstm_tuning.wait(10), "the GRU was finished before the LSTM's tuning started"
        return {"model": family}, f"{family} model"

    monkeypatch.setattr(T, "tune_family", tune)
    monkeypatch.setattr(T, "finish_family", finish)
    job = SimpleNamespace(families=("gru", "lstm"), dataset="d", ensemble=3)
    rows, finals = flow(lambda: T._families(None, job, None, None))()
    assert [r["model"] for r in rows] == ["gru", "lstm"] and finals == {"gru": "gru model", "lstm": "lstm model"}

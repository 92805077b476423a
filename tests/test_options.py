"""Configuration declared once: the CLI options come from the config dataclasses, the parsed job is
the dataclass, and the JSON round trip (worker processes, deployments) gives the same job back."""

from __future__ import annotations

import json
import operator

import numpy as np
import pytest

from flows.cli import build_parser
from forecasting.api.jobs import TrainJob, TuneConfig
from forecasting.core.backtest import BacktestConfig
from forecasting.core.data import IngestConfig
from forecasting.core.options import flag_name, from_dict, from_flags, from_options, option_fields, to_dict
from forecasting.core.scaling import series_stats


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_train_options_build_the_job_a_user_typed():
    args = parse("train", "etth1", "--horizon", "48", "--models", "lstm", "--trials", "7", "--max-epochs", "3",
                 "--seasons", "24,168", "--backtest-windows", "4", "--backtest-step", "12", "--objective", "backtest",
                 "--no-calendar", "--val", "0.15", "--metric", "smape", "--ensemble", "2")
    job = from_options(TrainJob, args, dataset=args.name)
    assert job == TrainJob("etth1", 48, ("lstm",), TuneConfig(n_trials=7, max_epochs=3), val=0.15, calendar=False,
                           metric="smape", ensemble=2, seasons=(24, 168), backtest=BacktestConfig(4, 12),
                           objective="backtest")


def test_defaults_of_the_cli_are_the_dataclass_defaults():
    job = from_options(TrainJob, parse("train", "d", "--horizon", "5"), dataset="d")
    assert job == TrainJob("d", 5)
    assert job.tune.n_trials == 10 and job.families == ("gru", "lstm") and job.calendar


def test_every_option_field_is_on_the_command_line_once():
    """No option is spelled by hand: each field made with `option(...)` appears in `train --help`,
    and `tune-worker` has the same ones but those that only a pipeline run uses."""
    sub = build_parser()._subparsers._group_actions[0].choices
    train_flags = {f for a in sub["train"]._actions for f in a.option_strings}
    worker_flags = {f for a in sub["tune-worker"]._actions for f in a.option_strings}
    wanted = {"--" + flag_name(f).replace("_", "-") for _, f, _ in option_fields(TrainJob)}
    assert wanted <= train_flags
    pipeline_only = {"--models", "--workers", "--ensemble", "--ensemble-seeds", "--ensemble-combine",
                     "--ensemble-check", "--no-ensemble-check", "--combine-families", "--no-combine-families"}
    assert wanted - pipeline_only <= worker_flags
    assert not pipeline_only & worker_flags
    ingest_flags = {f for a in sub["ingest"]._actions for f in a.option_strings}
    assert {"--" + flag_name(f).replace("_", "-") for _, f, _ in option_fields(IngestConfig)} <= ingest_flags


def test_json_round_trip_gives_the_same_job():
    job = TrainJob("m4", 48, ("gru",), TuneConfig(n_trials=3, storage="postgresql://h/db", timeout=9.5),
                   seasons=(24, 168), backtest=BacktestConfig(3, None), max_train_windows=100)
    assert from_dict(TrainJob, to_dict(job)) == job
    assert isinstance(from_dict(TrainJob, to_dict(job)).seasons, tuple)
    with pytest.raises(ValueError, match="unknown field"):
        from_dict(TrainJob, {**to_dict(job), "trails": 3})


def test_from_flags_names_options_as_typed():
    job = from_flags(TrainJob, dataset="x", horizon=6, trials=2, backtest_windows=3, models=("gru",))
    assert (job.tune.n_trials, job.backtest.n_windows, job.families) == (2, 3, ("gru",))
    with pytest.raises(TypeError, match="unknown option"):
        from_flags(TrainJob, dataset="x", horizon=6, trails=2)


def test_bad_job_values_are_refused_with_the_option_named():
    with pytest.raises(ValueError, match="--models"):
        TrainJob("x", 6, ("transformer",))
    with pytest.raises(ValueError, match="--ensemble"):
        TrainJob("x", 6, ensemble=0)
    with pytest.raises(ValueError, match="--backtest-windows"):
        TrainJob("x", 6, objective="backtest")


def test_series_stats_match_numpy_per_series_and_ignore_missing_values():
    rng = np.random.default_rng(0)
    values = rng.normal(1e5, 3.0, size=(50, 2))  # a large level with a small spread: two passes stay exact
    codes = rng.integers(0, 4, size=50)
    values[3, 1] = np.nan
    mean, std = series_stats(values, codes, 5)
    for s in range(4):
        rows = values[codes == s]
        np.testing.assert_allclose(mean[s], np.nanmean(rows, axis=0), rtol=1e-12)
        np.testing.assert_allclose(std[s], np.nanstd(rows, axis=0), rtol=1e-9)
    assert (mean[4] == 0).all() and (std[4] == 1).all()  # a series without rows keeps scale 1


def test_option_metadata_is_only_on_settings_a_user_can_change():
    # Heartbeat timings are engineering constants, not options: no flag for them.
    names = {f.name for _, f, _ in option_fields(TuneConfig)}
    assert names == {"n_trials", "timeout", "max_epochs", "storage", "pruner"}
    assert all(f.metadata.get("help") for _, f, _ in option_fields(TrainJob))


# Every option of TrainJob: the flags a user types and the value they mean, none of them the default.
EVERY_TRAIN_OPTION: dict[str, tuple[list[str], object]] = {
    "horizon": (["--horizon", "36"], 36),
    "families": (["--models", "lstm,gru"], ("lstm", "gru")),
    "tune.n_trials": (["--trials", "3"], 3),
    "tune.timeout": (["--timeout", "12.5"], 12.5),
    "tune.max_epochs": (["--max-epochs", "4"], 4),
    "tune.storage": (["--storage", "sqlite:////tmp/o.db"], "sqlite:////tmp/o.db"),
    "tune.pruner": (["--pruner", "hyperband"], "hyperband"),
    "val": (["--val", "0.15"], 0.15),
    "test": (["--test", "0.25"], 0.25),
    "device": (["--device", "cuda"], "cuda"),
    "precision": (["--precision", "fp16"], "fp16"),
    "seed": (["--seed", "7"], 7),
    "calendar": (["--no-calendar"], False),
    "max_train_windows": (["--max-train-windows", "64"], 64),
    "max_val_windows": (["--max-val-windows", "16"], 16),
    "metric": (["--metric", "smape"], "smape"),
    "max_lookback": (["--max-lookback", "96"], 96),
    "workers": (["--workers", "3"], 3),
    "ensemble": (["--ensemble", "2"], 2),
    "ensemble_seeds": (["--ensemble-seeds", "3"], 3),
    "ensemble_combine": (["--ensemble-combine", "median"], "median"),
    "ensemble_check": (["--no-ensemble-check"], False),
    "combine_families": (["--no-combine-families"], False),
    "seasons": (["--seasons", "24,168"], (24, 168)),
    "backtest.n_windows": (["--backtest-windows", "4"], 4),
    "backtest.step": (["--backtest-step", "6"], 6),
    "objective": (["--objective", "backtest"], "backtest"),
    "levels": (["--level", "50", "90"], (50, 90)),
    "statistical": (["--statistical"], True),
    "plot_series": (["--plot-series", "OT,HUFL"], ("OT", "HUFL")),
    "force": (["--force"], True),
}


def test_every_train_option_round_trips_through_the_command_line_and_json():
    """Each option field of TrainJob, given a non-default value on the command line, reaches the job
    (add_options -> parse_args -> from_options equals the job built by hand), and that job survives
    JSON (to_dict -> json -> from_dict) unchanged, tuples included."""
    assert {path for path, _, _ in option_fields(TrainJob)} == set(EVERY_TRAIN_OPTION)  # none forgotten
    value = {path: v for path, (_, v) in EVERY_TRAIN_OPTION.items()}
    want = TrainJob(
        "etth1", value["horizon"], value["families"],
        TuneConfig(n_trials=value["tune.n_trials"], timeout=value["tune.timeout"],
                   max_epochs=value["tune.max_epochs"], storage=value["tune.storage"], pruner=value["tune.pruner"]),
        val=value["val"], test=value["test"], device=value["device"], precision=value["precision"],
        seed=value["seed"],
        calendar=value["calendar"], max_train_windows=value["max_train_windows"],
        max_val_windows=value["max_val_windows"], metric=value["metric"], max_lookback=value["max_lookback"],
        workers=value["workers"], ensemble=value["ensemble"], ensemble_seeds=value["ensemble_seeds"],
        ensemble_combine=value["ensemble_combine"], ensemble_check=value["ensemble_check"],
        combine_families=value["combine_families"], seasons=value["seasons"],
        backtest=BacktestConfig(value["backtest.n_windows"], value["backtest.step"]),
        objective=value["objective"], levels=value["levels"], plot_series=value["plot_series"],
        statistical=value["statistical"], force=value["force"])
    defaults = TrainJob("etth1", 1)
    for path, v in value.items():  # no value is the default, else a flag the parser dropped would go unseen
        assert operator.attrgetter(path)(want) == v != operator.attrgetter(path)(defaults), path

    argv = [token for flags, _ in EVERY_TRAIN_OPTION.values() for token in flags]
    args = parse("train", "etth1", *argv)
    job = from_options(TrainJob, args, dataset=args.name)
    assert job == want
    assert all(isinstance(getattr(job, f), tuple) for f in ("families", "seasons", "levels", "plot_series"))

    stored = json.loads(json.dumps(to_dict(job)))
    assert stored["tune"]["pruner"] == "hyperband" and stored["levels"] == [50, 90]
    back = from_dict(TrainJob, stored)
    assert back == want and isinstance(back.levels, tuple) and isinstance(back.backtest, BacktestConfig)


def test_the_ensemble_combinations_offered_are_those_the_ensemble_knows():
    from forecasting.api.ensemble import COMBINES
    from forecasting.api.jobs import COMBINES as OFFERED

    assert tuple(COMBINES) == OFFERED
    with pytest.raises(ValueError, match="--ensemble-seeds"):
        TrainJob("d", 5, ensemble_seeds=0)

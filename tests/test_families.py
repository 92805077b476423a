"""Model families are plug-ins: a family is one module and one `register` call, and everything else
(the front door, tuning, `train --models`, registration, the pyfunc model) finds it by name.

`tests/plugins/mlp_family.py` is a small non-recurrent family registered from outside the package.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import flows_fixtures  # noqa: F401  (first: sets PREFECT_HOME before prefect is imported)
import numpy as np
import pandas as pd
import pytest
from flows_fixtures import FORECASTING_EXE, REPO, bare_python, subprocess_env, synthetic_frame, write_csv

from forecasting import families
from forecasting.api.forecaster import Forecaster, ForecasterConfig
from forecasting.api.jobs import TrainJob
from forecasting.core.data import split_fractions
from forecasting.core.training import TrainConfig
from forecasting.families.recurrent import RecurrentConfig
from forecasting.tuning.space import DRAW_ORDER, SearchSpace, apply_params, starting_point
from tests.conftest import sine_frame

PLUGINS = REPO / "tests" / "plugins"
sys.path.insert(0, str(PLUGINS))
import mlp_family  # noqa: E402  (registers "mlp")

pytest_plugins = ["flows_fixtures"]  # prefect_api_url, also when this file runs alone


def test_the_registry_knows_the_builtin_families_and_names_the_known_ones_on_a_typo():
    assert {"gru", "lstm", "mlp"} <= set(families.names())
    assert families.DEFAULT == ("gru", "lstm")
    with pytest.raises(ValueError, match=r"unknown model family 'grue'; registered: gru, lstm"):
        families.get("grue")
    with pytest.raises(ValueError, match=r"--models: unknown model family \['grue'\]"):
        TrainJob("toy", 12, ("gru", "grue"))
    assert TrainJob("toy", 12, ("mlp",)).families == ("mlp",)  # a plug-in is as good as a built-in


def test_a_family_config_must_carry_the_fields_the_front_door_reads():
    @dataclass(frozen=True)
    class NoLookback:
        horizon: int = 1
        n_features: int = 1

    with pytest.raises(TypeError, match=r"lacks \['lookback'\]"):
        families.register(families.Family("bad", NoLookback, lambda p: None, None, None, None))
    assert "bad" not in families.names()


def test_a_config_names_its_family_and_old_saved_configs_still_load():
    assert ForecasterConfig(model=RecurrentConfig(cell="lstm")).family == "lstm"
    assert ForecasterConfig(model=mlp_family.MLPConfig()).family == "mlp"
    saved = ForecasterConfig(model=RecurrentConfig(cell="lstm", hidden=7)).to_dict()
    del saved["family"]  # written before families were registered: the cell named it
    back = ForecasterConfig.from_dict(saved)
    assert back.family == "lstm" and back.model == RecurrentConfig(cell="lstm", hidden=7)
    mlp = ForecasterConfig(model=mlp_family.MLPConfig(hidden=9), calendar=False)
    assert ForecasterConfig.from_dict(mlp.to_dict()) == mlp


def test_the_space_keeps_the_historical_draw_order_and_adds_a_family_s_own_ranges():
    space = SearchSpace(lookbacks=(24, 48), periods=(24,))
    # a seed draws what it drew before families; names added since follow
    assert tuple(space.params("gru")) == (*DRAW_ORDER, "multiplicative", "lags")
    assert tuple(space.params("mlp")) == ("lookback", "hidden", "lr", "batch_size", "weight_decay", "loss")
    assert space.params("mlp")["hidden"] == families.IntRange(8, 32, log=True)
    first = starting_point(space, "mlp")
    assert first == {"lookback": 48, "lr": 3e-3, "batch_size": 256, "weight_decay": 1e-7, "loss": "mse", "hidden": 8}


def test_apply_params_moves_a_base_config_between_families():
    base = ForecasterConfig(model=RecurrentConfig(horizon=12, n_features=3), calendar=False)
    params = {"lookback": 48, "lr": 1e-3, "batch_size": 64, "weight_decay": 1e-6, "loss": "mae", "hidden": 16,
              "layers": 2, "dropout": 0.1, "norm": "last", "segment": 64, "highway": True, "init": "seasonal"}
    lstm = apply_params(base, params, "lstm")
    assert lstm.family == "lstm" and lstm.model.cell == "lstm" and lstm.model.segment == 48  # capped at lookback
    assert (lstm.train.lr, lstm.train.batch_size, lstm.train.loss) == (1e-3, 64, "mae")
    mlp = apply_params(base, params, "mlp")
    assert mlp.family == "mlp" and mlp.model == mlp_family.MLPConfig(lookback=48, horizon=12, n_features=3, hidden=16)


def test_a_plugin_family_goes_through_the_whole_front_door(tmp_path):
    """fit / predict / cross_validation / calibrate / save / load, with no code that knows the MLP."""
    df = sine_frame(n_series=3, length=400, seed=2)
    split = split_fractions(df.groupby("unique_id", sort=False).size(), 0.15, 0.2)
    f = Forecaster(ForecasterConfig(model=mlp_family.MLPConfig(lookback=48, horizon=12, hidden=32), calendar=False,
                                    seasons=(24,), train=TrainConfig(max_epochs=30, lr=3e-3, device="cpu", seed=0)))
    f.fit(df, split)
    bt = f.cross_validation(df, split.val_end, split.train_end, predictors=[f.predictor(), *f.baselines(df, split)[0]])
    scores = bt.metrics.set_index("predictor")["mase"]
    assert scores["y_hat"] < scores["naive"]  # it learnt the cycle, unlike the last value
    conf = f.calibrate(df, (80,), split.val_end, split.train_end)
    assert conf is not None and f.conformal_ is conf
    fc, skipped = f.predict(df, levels=(80,))
    assert len(fc) == 3 * 12 and not skipped and (fc["y_hat-lo-80"] <= fc["y_hat"]).all()
    g = Forecaster.load(f.save(tmp_path / "m"))
    assert g.cfg == f.cfg and g.family.name == "mlp"
    pd.testing.assert_frame_equal(g.predict(df, levels=(80,))[0], fc)


@pytest.mark.slow
def test_a_plugin_family_trains_registers_and_serves_through_the_command(prefect_api_url, tmp_path):
    """`forecasting train --models mlp` with the plug-in on $FORECASTING_FAMILIES tunes, registers and
    promotes it; the registered model forecasts in a Python where neither the project nor the
    plug-in is installed (both are bundled with it), as `forecasting forecast` does."""
    home, csv = tmp_path / "home", write_csv(tmp_path / "toy.csv", synthetic_frame(n_series=2, length=400))
    env = subprocess_env(PREFECT_API_URL=prefect_api_url, FORECASTING_FAMILIES="mlp_family", PYTHONPATH=str(PLUGINS))

    def cli(*argv: str) -> subprocess.CompletedProcess:
        r = subprocess.run([str(FORECASTING_EXE), *argv, "--home", str(home)], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return r

    cli("ingest", str(csv), "--name", "toy")
    cli("train", "toy", "--models", "mlp", "--horizon", "12", "--trials", "2", "--max-epochs", "2", "--level", "80")
    out = tmp_path / "cli.csv"
    cli("forecast", "toy-mlp", "--input", str(csv), "--output", str(out), "--level", "80")
    want = pd.read_csv(out, parse_dates=["ds"])

    py, bare = bare_python(tmp_path, f"sqlite:///{home / 'mlruns' / 'mlflow.db'}")
    script = ("import sys, mlflow, pandas as pd\n"
              "m = mlflow.pyfunc.load_model('models:/toy-mlp@champion')\n"
              "m.predict(pd.read_csv(sys.argv[1]), params={'level': [80]}).to_csv(sys.argv[2], index=False)\n"
              "import mlp_family; print(mlp_family.__file__)\n")
    got_path = tmp_path / "pyfunc.csv"
    r = subprocess.run([str(py), "-c", script, str(csv), str(got_path)], cwd=tmp_path, env=bare,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "/artifacts/code/mlp_family.py" in r.stdout  # the bundled copy
    got = pd.read_csv(got_path, parse_dates=["ds"])
    assert len(got) == 2 * 12 and list(got.columns) == list(want.columns)
    np.testing.assert_allclose(got[["y_hat", "y_hat-lo-80", "y_hat-hi-80"]], want[["y_hat", "y_hat-lo-80",
                                                                                   "y_hat-hi-80"]], rtol=1e-5)


def test_no_module_outside_the_families_branches_on_a_family_name():
    """Family names appear only where families are defined and in the defaults list."""
    allowed = {Path("forecasting/families/recurrent.py"), Path("forecasting/families/__init__.py")}
    hits = []
    for path in sorted((REPO / "forecasting").rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel in allowed:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if any(f'"{n}"' in code or f"'{n}'" in code for n in ("gru", "lstm")):
                hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_an_unknown_family_option_is_one_clear_error(tmp_path):
    r = subprocess.run([str(FORECASTING_EXE), "tune-worker", "toy", "--horizon", "12", "--family", "grue",
                        "--home", str(tmp_path)], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown model family 'grue'" in r.stderr
    assert not any(tmp_path.iterdir())  # refused before anything was created

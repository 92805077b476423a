"""The registered model: an MLflow pyfunc wrapper around a saved forecaster, which carries its own
code (`code_paths`) so it loads and serves where this project is not installed.

Input: a long history (`unique_id`, `ds`, `y`, covariates), as a DataFrame, a JSON
`dataframe_split` body or a CSV (`ds` as ISO-8601 strings is fine). Output: the next steps of
every usable series (`unique_id`, `ds`, `y_hat`). Predict-time parameters: `horizon` (1..trained H) and
`level` (a list of interval levels, e.g. [80, 95]: adds `y_hat-lo-<L>`, `y_hat-hi-<L>` from the
conformal calibration stored in the model).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from forecasting.core.columns import ID, TIME, Y_HAT
from forecasting.core.errors import ForecastingError


class ForecastModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: long history -> next H steps. The series left out (too short, gaps) are in
    the output's `attrs["skipped"]` as (series, reason) pairs; `forecasting forecast` reports them."""

    def load_context(self, context) -> None:
        from forecasting.api.ensemble import load_forecaster

        self.forecaster = load_forecaster(context.artifacts["forecaster"])

    # The DataFrame hint only keeps MLflow from warning that `predict` has no type hints.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Bad parameters or input raise MLflow's INVALID_PARAMETER_VALUE with a one-line reason, which
        the scoring server answers with 400 and that reason (not a 500 with a stack trace)."""
        try:
            return self._predict(pd.DataFrame(model_input), params or {})
        except (ForecastingError, ValueError, KeyError, TypeError) as exc:  # refused input: DataError and kin
            from mlflow.exceptions import INVALID_PARAMETER_VALUE, MlflowException

            raise MlflowException(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                                  error_code=INVALID_PARAMETER_VALUE) from None

    def _predict(self, history: pd.DataFrame, params: dict) -> pd.DataFrame:
        H = self.forecaster.cfg.model.horizon
        horizon = H if params.get("horizon") is None else int(params["horizon"])
        if not 1 <= horizon <= H:
            raise ValueError(f"param horizon must be between 1 and the trained horizon {H}, got {horizon}")
        levels = tuple(int(v) for v in params.get("level") or ())
        if history.empty:
            raise ValueError("the input holds no rows: send the history of at least one series")
        out, skipped = self.forecaster.predict(history, levels=levels)
        if out.empty:
            first = "; ".join(f"{u}: {why}" for u, why in skipped[:3])
            raise ValueError(f"no series could be forecast ({len(skipped)} skipped; {first})")
        out = out[out.groupby(ID, sort=False).cumcount() < horizon].reset_index(drop=True)
        out.attrs["skipped"] = skipped
        return out


def signature(horizon: int) -> ModelSignature:
    """Output columns and the `horizon` and `level` parameters. The input is left unenforced on purpose: the
    forecaster parses `ds` itself, so a CSV's ISO-8601 strings work as well as datetimes, and any
    covariate columns it was trained with pass through."""
    outputs = Schema([ColSpec("string", ID), ColSpec("datetime", TIME), ColSpec("double", Y_HAT)])
    params = ParamSchema([ParamSpec("horizon", "long", horizon), ParamSpec("level", "long", [], shape=(-1,))])
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def pip_requirements() -> list[str]:
    """Pinned runtime needs of the model (given explicitly: MLflow's inference is slow)."""
    import importlib.metadata as md

    pins = [f"{p}=={md.version(p).split('+')[0]}" for p in ("torch", "numpy", "pandas", "scikit-learn", "mlflow")]
    return pins + ["cloudpickle"]


def code_path() -> str:
    """The `forecasting` package folder, bundled with every logged model."""
    return str(Path(__file__).resolve().parents[1])


def code_paths(family_module: str) -> list[str]:
    """What a logged model bundles: the `forecasting` package, and a plug-in family's top-level
    module or package when the family lives outside it (so the model loads where neither is
    installed)."""
    top = family_module.split(".")[0]
    if not top or top == "forecasting":
        return [code_path()]
    file = Path(importlib.import_module(top).__file__).resolve()
    return [code_path(), str(file.parent if file.name == "__init__.py" else file)]

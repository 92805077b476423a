"""Model families: one module per family, registered by name (`base.py` says what a family is).

To add one: write `forecasting/families/<name>.py` with its config, space, module and a
`register(Family(...))` call, and add the module to `base._BUILTIN` (or, outside this package,
name it in $FORECASTING_FAMILIES). `--models`, tuning, the pipeline, backtests, ensembles and the
pyfunc model pick it up from the registry.
"""

from forecasting.families.base import (
    Choice,
    Family,
    FloatRange,
    IntRange,
    Param,
    family_of,
    get,
    import_family,
    names,
    register,
)

DEFAULT = ("gru", "lstm")  # what `train` tunes when `--models` is not given

__all__ = ["DEFAULT", "Choice", "Family", "FloatRange", "IntRange", "Param", "family_of", "get", "import_family", "names",
           "register"]

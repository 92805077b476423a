"""Configuration declared once: frozen dataclasses whose fields carry their command-line option.

A field made with `option(...)` is a setting a user can change: the CLI builds its argparse
options from the dataclass (`add_options`) and the job back from the parsed values
(`from_options`); flows take the dataclass itself; worker processes and stored jobs use
`to_dict`/`from_dict`, the one (de)serializer. Nested dataclass fields are walked, so
`TrainJob.tune.n_trials` is `--trials` without being spelled again anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
           choices: tuple | None = None, parse: Callable[[str], Any] | None = None,
           factory: Callable[[], Any] | None = None, many: bool = False) -> Any:
    """A dataclass field that is also a command-line option (`--<name>` unless `flag` says).
    `many`: a tuple field given as several values (`--level 80 95`), each read by `parse`."""
    meta = {"help": help, "flag": flag, "choices": choices, "parse": parse, "many": many}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def positive_int(text: str) -> int:
    """An option parser: a whole number of at least 1 (0 and negatives are refused by argparse)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return n


def name_list(text: str) -> tuple[str, ...]:
    """An option parser: `a,b` -> ("a", "b")."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # string annotations, resolved in the class's module


def _nested(tp: Any) -> type | None:
    return tp if dataclasses.is_dataclass(tp) and isinstance(tp, type) else None


def option_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, type) of every option of `cls`, nested dataclasses included."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        sub = _nested(hints[f.name])
        if sub is not None:
            yield from option_fields(sub, f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            yield f"{prefix}{f.name}", f, hints[f.name]


def _scalar(tp: Any) -> Any:
    """The scalar type behind `X | None`."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if isinstance(tp, types.UnionType) and len(args) == 1 else tp


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add every option of `cls` (except the dotted paths in `skip`) to `parser`."""
    for path, f, tp in option_fields(cls):
        if path in skip:
            continue
        flag, meta, scalar = "--" + flag_name(f).replace("_", "-"), f.metadata, _scalar(tp)
        kw: dict[str, Any] = {"dest": path.replace(".", "__"), "help": meta["help"]}
        if scalar is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=_default(f), **kw)
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kw |= {"required": True} if required else {"default": _default(f)}
        kw["metavar"] = None if meta["choices"] else flag_name(f).upper()
        if meta.get("many"):
            kw["nargs"] = "*"
        parser.add_argument(flag, type=meta["parse"] or scalar, choices=meta["choices"], **kw)


def from_options(cls: type, args: argparse.Namespace, prefix: str = "", **given: Any) -> Any:
    """An instance of `cls` from parsed options (as `add_options` named them) and `given` values."""
    hints, values = _hints(cls), {}
    for f in dataclasses.fields(cls):
        sub, dest = _nested(hints[f.name]), f"{prefix}{f.name}".replace(".", "__")
        if f.name in given:
            values[f.name] = given[f.name]
        elif sub is not None:
            values[f.name] = from_options(sub, args, f"{prefix}{f.name}.")
        elif hasattr(args, dest):
            v = getattr(args, dest)
            values[f.name] = tuple(v) if f.metadata.get("many") and v is not None else v
    return cls(**values)


def flag_name(f: dataclasses.Field) -> str:
    """The option's name without dashes, as a keyword: `--trials` -> `trials`."""
    return (f.metadata["flag"] or "--" + f.name).lstrip("-").replace("-", "_")


def from_flags(cls: type, **values: Any) -> Any:
    """An instance of `cls` from option values named as on the command line (`trials=3,
    backtest_windows=2`), plus plain fields (`dataset=...`): how code and tests say what a user
    would type, without spelling the nesting again."""
    paths = {flag_name(f): path for path, f, _ in option_fields(cls)}
    ns = argparse.Namespace(**{paths[k].replace(".", "__"): v for k, v in values.items() if k in paths})
    given = {k: v for k, v in values.items() if k not in paths}
    unknown = [k for k in given if k not in {f.name for f in dataclasses.fields(cls)}]
    if unknown:
        raise TypeError(f"{cls.__name__}: unknown option(s) {unknown}")
    return from_options(cls, ns, **given)


def to_dict(obj: Any) -> dict:
    """A config dataclass as plain JSON-able values (tuples become lists)."""
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict) -> Any:
    """The inverse of `to_dict`: nested dataclasses rebuilt, lists back to tuples where the field
    is a tuple; keys the class does not have are refused (a stale or foreign job)."""
    hints, names = _hints(cls), {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {unknown}")
    return cls(**{k: _value(hints[k], v) for k, v in data.items()})


def _value(tp: Any, v: Any) -> Any:
    tp = _scalar(tp)
    if v is None:
        return None
    if _nested(tp) is not None:
        return from_dict(tp, v)
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return tuple(_value(inner, x) if isinstance(x, list | dict) else x for x in v)
    return v

"""Several seeds of one benchmark: each seed runs as its own invocation and writes
`<name>_seed<S>.json`; `merge` folds every seed file of a folder into `<name>.json`, with the
mean and standard deviation of each score and the tie rule (within two standard deviations).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def seed_path(out: Path, name: str, seed: int) -> Path:
    return Path(out) / f"{name}_seed{seed}.json"


def write_and_merge(out: Path, name: str, seed: int, payload: dict, merge) -> dict:
    """Write one seed's result as `<name>_seed<S>.json` and fold all seeds with `merge(out)`."""
    from _common import _jsonable

    path = seed_path(out, name, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    merged = merge(out)
    print(f"[{name}] wrote seed {seed}; merged seeds {merged['seeds']} into {out}", file=sys.stderr)
    return merged


def seed_files(out: Path, name: str) -> list[Path]:
    """The seed files of `name` in `out`, by seed."""
    files = Path(out).glob(f"{name}_seed*.json")
    return sorted(files, key=lambda p: int(p.stem.rsplit("seed", 1)[1]))


def mean_sd(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and count."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def compare(ours: dict, other: float | dict, resolution: float = 0.0) -> str:
    """'better', 'worse' or 'tie' (lower is better): a tie when the difference is within two standard
    deviations (of ours, and of the other side's too when it has seeds), or within half the last
    digit `resolution` of a value published with limited precision."""
    other_mean = other["mean"] if isinstance(other, dict) else float(other)
    other_sd = other.get("sd") or 0.0 if isinstance(other, dict) else 0.0
    band = max(2 * math.sqrt((ours.get("sd") or 0.0) ** 2 + other_sd ** 2), resolution / 2)
    diff = ours["mean"] - other_mean
    if abs(diff) <= band:
        return "tie"
    return "better" if diff < 0 else "worse"


def fmt(s: dict, digits: int = 3) -> str:
    """'0.123 ± 0.004' (n seeds implied by the table)."""
    if not s or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"


def load_seeds(out: Path, name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in seed_files(out, name)]


def runs_meta(runs: list[dict]) -> list[dict]:
    """What each seed's run was measured under, for the merged file."""
    keep = ("seed", "date", "wall_seconds", "code", "command", "loadavg_start", "loadavg_end", "budget")
    return [{k: r.get(k) for k in keep} for r in runs]

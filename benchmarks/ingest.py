"""Ingest of many short series: a CSV of 50,000 series x 30 daily rows through `datasets.ingest`
(read, reshape, validate, regularize, write Parquet + record), CPU and wall seconds, in this process.

    python benchmarks/ingest.py [--quick] [--out DIR] [--series N] [--rows N]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from forecasting.core import datasets  # noqa: E402

NAME = "ingest"
GOAL_SECONDS = 10.0  # issue 20: 50,000 x 30 in under 10 s on 2 cores


def panel_csv(path: Path, n_series: int, rows: int) -> Path:
    rng = np.random.default_rng(0)
    ds = pd.date_range("2024-01-01", periods=rows, freq="D").strftime("%Y-%m-%d")
    pd.DataFrame({"unique_id": np.repeat([f"s{i:06d}" for i in range(n_series)], rows),
                  "ds": np.tile(ds, n_series), "y": rng.normal(size=n_series * rows).round(4)}).to_csv(path, index=False)
    return path


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--series", type=int, default=None, help="series (default 50,000; 2,000 under --quick)")
    p.add_argument("--rows", type=int, default=30)
    args = p.parse_args(argv)
    n = args.series or (2000 if args.quick else 50_000)
    run = C.Run(NAME, args, {"series": n, "rows": args.rows})
    with tempfile.TemporaryDirectory() as tmp:
        src = panel_csv(Path(tmp) / "panel.csv", n, args.rows)
        with C.timed() as t:
            _, report = datasets.ingest(src, "panel", tmp)
    res = run.finish({"series": n, "rows_per_series": args.rows, "n_series": report.n_series, **t,
                      "ms_cpu_per_series": 1000 * t["cpu_seconds"] / n, "goal_seconds": GOAL_SECONDS,
                      "met": t["wall_seconds"] < GOAL_SECONDS})
    md = ("## Ingest of many short series\n\n" + C.conditions(res)
          + f"\n{n:,} series x {args.rows} daily rows (CSV) -> Parquet: {t['wall_seconds']:.1f} s wall, "
          f"{t['cpu_seconds']:.1f} CPU s ({res['ms_cpu_per_series']:.3f} ms a series); target under "
          f"{GOAL_SECONDS:.0f} s: {C.verdict(res['met'])}.\n")
    C.write(args.out, NAME, res, md)
    print(md)
    return res


if __name__ == "__main__":
    main()

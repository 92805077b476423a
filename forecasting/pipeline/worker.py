"""Entry point of a tuning worker process (`python -m forecasting.pipeline.worker`), started by
`search.tune_parallel`: it joins the family's study and tunes until the study is full.
Everything it does is `search.join_study`; this module only reads its command line."""

from __future__ import annotations

import argparse
import os
import sys

from forecasting.core.allocator import keep_freed_memory
from forecasting.core.errors import ForecastingError
from forecasting.pipeline.search import JOB_ENV, job_from_json, join_study


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m forecasting.pipeline.worker", description="one tuning worker")
    p.add_argument("--home", required=True)
    p.add_argument("--family", required=True)
    p.add_argument("--job", required=True, help=f"TrainJob as JSON, or - to read it from ${JOB_ENV}")
    p.add_argument("--parent-run-id")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--threads", type=int)
    args = p.parse_args(argv)
    keep_freed_memory()  # this process's entry point: see forecasting.core.allocator
    try:
        job = job_from_json(os.environ[JOB_ENV] if args.job == "-" else args.job)
        join_study(args.home, job, args.family, args.parent_run_id, args.index, args.threads, progress=False)
    except ForecastingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

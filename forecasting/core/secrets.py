"""Credentials in URLs: kept in this process (and handed to its worker processes through their
environment), never in what a run records.

A storage URL such as `postgresql://user:password@host/db` is replaced, everywhere it travels (the
job, MLflow parameters, Prefect flow-run parameters, log lines), by its redacted form
`postgresql://user:***@host/db`; `reveal` turns the redacted form back into the real URL only where
a connection is opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

SECRET_ENV = "FORECASTING_SECRET_URLS"  # {redacted: real} for worker processes (their environment only)
MASK = "***"
_REAL: dict[str, str] = {}


def redact(url: str) -> str:
    """`url` with its password replaced by ***; unchanged when it has none (or is not a URL)."""
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a malformed port: nothing safe to rebuild, so keep only what follows the '@'
        return f"{url.split('://', 1)[0]}://{MASK}@{url.rsplit('@', 1)[-1]}" if "@" in url else url
    return urlunsplit(parts._replace(netloc=netloc))


def hide(url: str | None) -> str | None:
    """The redacted form of `url`, remembered in this process so that `reveal` can undo it."""
    if not url:
        return url
    masked = redact(url)
    if masked != url:
        _REAL[masked] = url
    return masked


def reveal(url: str | None) -> str | None:
    """The real URL behind a redacted one (this process's, else the environment's), else `url`."""
    if not url or MASK not in url:
        return url
    return _REAL.get(url) or json.loads(os.environ.get(SECRET_ENV) or "{}").get(url, url)


def child_env() -> dict[str, str]:
    """Environment entries that let a worker process `reveal` what this one hid."""
    known = {**json.loads(os.environ.get(SECRET_ENV) or "{}"), **_REAL}
    return {SECRET_ENV: json.dumps(known)} if known else {}


@contextmanager
def exported() -> Iterator[None]:
    """Within the block, this process's environment carries what `child_env` gives, so that worker
    processes it starts (a local Dask cluster's) can `reveal` what this one hid; restored after."""
    before = os.environ.get(SECRET_ENV)
    os.environ.update(child_env())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = before

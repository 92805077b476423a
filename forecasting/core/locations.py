"""Where inputs and outputs may live: a local path, a `file://` URL, or any URL that fsspec opens
(`s3://`, `gs://`, `abfs://`, `memory://`, ...) and pandas reads through it.

A `file://` URL is made a local path here, so it keeps every local check and the atomic
temp-and-rename writes of `files`. A remote output is written to a local temporary file, uploaded
beside its target under a temporary name and then moved into place: a reader never sees half an
object, and a failed upload leaves the old one. fsspec is imported only for a remote location (it
comes with pandas' usual companions; the protocol's own package, e.g. s3fs, is the user's)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

from forecasting.core.errors import DataError

Location = Path | str  # a local Path, or a remote URL kept as a string
PARQUET = (".parquet", ".pq")  # the extensions read and written as Parquet


def is_remote(location: str | Path) -> bool:
    """A URL with a scheme other than `file` (a Windows drive letter is not a scheme)."""
    text = str(location)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    return len(scheme) > 1 and scheme.lower() != "file"


def resolve(location: str | Path) -> Location:
    """A remote URL unchanged; a `file://` URL or a path as a local Path."""
    text = str(location)
    if is_remote(text):
        return text
    if text.lower().startswith("file://"):
        return Path(unquote(urlparse(text).path))
    return Path(location)


def suffix(location: Location) -> str:
    """The lower-case extension of a path or of a URL's path part."""
    if isinstance(location, Path):
        return location.suffix.lower()
    return PurePosixPath(urlparse(location).path).suffix.lower()


def filesystem(url: str):
    """fsspec's file system for `url` and the path on it; a protocol without its package is refused."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError as exc:
        raise DataError(f"{url}: reading or writing this URL needs a package that is not installed ({exc}); "
                        "install it (for example s3fs for s3://, gcsfs for gs://) or use a local path") from None
    except ValueError as exc:  # an unknown protocol
        raise DataError(f"{url}: {exc}") from None


def check_readable_file(url: str) -> None:
    """A remote input must exist and be a file (one line naming it, before pandas tries)."""
    fs, path = filesystem(url)
    if not fs.exists(path):
        raise DataError(f"file not found: {url}")
    if not fs.isfile(path):
        raise DataError(f"not a file: {url}")


def upload_atomic(url: str, write: Callable[[str], None]) -> str:
    """`write(tmp)` to a local temporary file, upload it beside `url` under a temporary name, then move
    it onto `url`; the temporary object is removed whatever happens."""
    fs, path = filesystem(url)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    staged = f"{parent}/" * bool(parent) + f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    with tempfile.TemporaryDirectory(prefix="forecasting-upload-") as tmp:
        local = os.path.join(tmp, name)
        write(local)
        try:
            fs.put_file(local, staged)
            fs.mv(staged, path)
        finally:
            if fs.exists(staged):
                fs.rm(staged)
    return url

"""The README's results block is what benchmarks/report.py generates from the committed JSON files.

No benchmark runs here: the test renders the block from `benchmarks/results/*.json` with the
report's own code and compares text, so it holds whatever numbers the JSON files carry. When it
fails, regenerate the block with `python benchmarks/report.py --readme README.md`.
"""

from __future__ import annotations

import difflib
import importlib
import shutil
import sys
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
_BENCH = _REPO / "benchmarks"


@pytest.fixture(scope="module")
def report():
    """benchmarks/report.py as a module (it imports the benchmark scripts' summary renderers)."""
    sys.path.insert(0, str(_BENCH))
    try:
        yield importlib.import_module("report")
    finally:
        sys.path.remove(str(_BENCH))


def _diff(a: str, b: str) -> str:
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), "README.md", "report.py", lineterm=""))


def test_readme_results_block_matches_generator(report):
    readme = _REPO / "README.md"
    current = report.current_block(readme.read_text())
    expected = report.readme_block(readme, _BENCH / "results")
    assert current == expected, (
        "README.md results block differs from `python benchmarks/report.py --readme README.md`:\n"
        + _diff(current, expected))


def test_splice_on_a_copy_leaves_the_readme_unchanged(report, tmp_path):
    """Splicing into a copy (same relative layout) reproduces README.md byte for byte."""
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    for js in (_BENCH / "results").glob("*.json"):
        shutil.copy(js, results / js.name)
    copy = tmp_path / "README.md"
    original = (_REPO / "README.md").read_text()
    copy.write_text(original)
    report.splice_readme(copy, results)
    assert copy.read_text() == original, _diff(original, copy.read_text())


def test_old_results_without_script_hash_say_not_recorded(report):
    """Results written before the script hash and untracked count were recorded still render."""
    C = report.C
    old = {"commit": "abc1234", "dirty": True}
    assert C.script_hash(old) == "not recorded" and C.script_hash({}) == "not recorded"
    assert "not recorded" in C.code_summary(old) and "tracked files" in C.code_summary(old)
    new = {"commit": "abc1234", "dirty": True, "modified": 0, "untracked": 2, "script": "benchmarks/speed.py",
           "script_sha256": "0123456789abcdef" * 4}
    assert "2 untracked" in C.code_summary(new) and "speed.py sha256 0123456789ab" in C.code_summary(new)
    res = {"date": "2026-01-01T00:00:00+00:00", "machine": {"cpu_model": "cpu", "cpu_count": 2},
           "device": {"type": "cpu", "torch_threads": 1}, "versions": {"torch": "2"}, "seed": 0,
           "wall_seconds": 1.0, "code": old}
    assert "script sha256 not recorded" in report.sub_line("x", res)
    assert "script sha256 0123456789ab," in report.sub_line("x", {**res, "code": new})


def test_result_files_do_not_make_the_code_dirty(report, tmp_path, monkeypatch):
    """A seed run writes into benchmarks/results/ of the tree it runs from: those files (first line of
    git's output included) do not count as changed code; a changed script does."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    for name in ("benchmarks/results/a.json", "benchmarks/results/b.json", "benchmarks/x.py"):
        (tmp_path / name).write_text("0\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(report.C, "REPO", tmp_path)
    for name in ("benchmarks/results/a.json", "benchmarks/results/b.json"):
        (tmp_path / name).write_text("1\n")
    (tmp_path / "benchmarks" / "results" / "new.json").write_text("{}\n")
    state = report.C.code_state(tmp_path / "benchmarks" / "x.py")
    assert (state["dirty"], state["modified"], state["untracked"]) == (False, 0, 0)
    (tmp_path / "benchmarks" / "x.py").write_text("1\n")
    assert report.C.code_state(tmp_path / "benchmarks" / "x.py")["modified"] == 1

"""Smoke tests of the benchmark scripts: each runs on a tiny slice (`--quick`) into a temporary folder.

The benchmarks themselves are not part of the suite; these only check that every script runs end
to end, writes its JSON and Markdown, and records the conditions of the run. They read the shared
data folder (../shared/data) and are skipped where it is absent.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_BENCH_REPO = Path(__file__).resolve().parents[1]
_BENCH_DATA = _BENCH_REPO.parent / "shared" / "data"
_BENCH_META = ("date", "machine", "device", "versions", "seed", "budget", "wall_seconds", "loadavg_start",
               "loadavg_end")


def _bench_run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(_BENCH_REPO / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=_BENCH_REPO)


def _bench_quick(script: str, name: str, out: Path, *extra: str) -> dict:
    """Run a benchmark with --quick into `out`; return its JSON after checking both files."""
    r = _bench_run(script, "--quick", "--out", str(out), *extra)
    assert r.returncode == 0, r.stderr[-4000:]
    res = json.loads((out / f"{name}.json").read_text())
    md = (out / f"{name}.md").read_text()
    assert res["quick"] is True and "QUICK MODE" in md
    for key in _BENCH_META:
        assert key in res, key
    assert res["machine"]["cpu_count"] >= 1 and res["machine"]["platform"]
    assert res["versions"]["torch"] and res["device"]["type"] in ("cpu", "cuda")
    return res


_needs_bench_data = pytest.mark.skipif(
    not (_BENCH_DATA / "ett" / "ETTh1.csv").is_file(), reason=f"benchmark data not found under {_BENCH_DATA}")
# The benchmark scripts' smoke runs (30-150 s each on a slow 2-core machine: they train, and start servers
# and clusters) check the scripts, not the product, whose paths the rest of the suite runs. With them the
# suite took 19 minutes on such a machine, past CI's 15; they run with FORECASTING_SLOW_BENCH=1.
slow_bench = pytest.mark.skipif(os.environ.get("FORECASTING_SLOW_BENCH") != "1",
                                reason="a benchmark script's smoke run: runs with FORECASTING_SLOW_BENCH=1, outside "
                                       "CI's 15-minute budget")


@pytest.mark.slow
@_needs_bench_data
@slow_bench
def test_benchmark_etth1_quick(tmp_path):
    res = _bench_quick("etth1.py", "etth1", tmp_path)
    (run,) = res["per_seed"]  # one seed ran: the merged file holds it and its aggregate
    assert res["seeds"] == [0] and (tmp_path / "etth1_seed0.json").is_file()
    assert {(r["horizon"], r["family"]) for r in run["results"]} == {(24, "gru"), (24, "lstm"), (48, "gru"),
                                                                      (48, "lstm")}
    for r in run["results"]:
        assert r["test_mse_std"] > 0 and r["test_windows"] == 400 - r["horizon"] + 1
        # the refit of the selected configuration reproduces its trial's validation loss
        assert r["refit_val_mse_std"] == pytest.approx(r["best_val_mse_std"], rel=1e-4)
        assert r["ensemble"]["size"] >= 1 and r["ensemble"]["test_mse_std"] > 0
    single = {(a["horizon"], a["family"]): a for a in res["aggregate"] if a["variant"] == "single"}
    for r in run["results"]:
        assert single[(r["horizon"], r["family"])]["mse"] == {"mean": r["test_mse_std"], "sd": 0.0, "n": 1}
    assert {b["model"] for b in res["baselines"]} == {"naive", "seasonal_naive_24", "seasonal_naive_168", "linear"}
    assert {r["model"] for r in res["published"]} >= {"LSTMa", "DeepAR", "NLinear"}
    assert len(res["goals"]["by_horizon"]) == 4
    _check_etth1_statistical(res, run, tmp_path)
    # a second seed's file (seed 0's with other scores, to spare a second run) merges into mean and
    # standard deviation; the statistical rows stay those computed once
    second = json.loads((tmp_path / "etth1_seed0.json").read_text())
    second["seed"] = 1
    for r in second["results"]:
        r["test_mse_std"] *= 1.1
    (tmp_path / "etth1_seed1.json").write_text(json.dumps(second))
    r2 = _bench_run("etth1.py", "--quick", "--merge-only", "--out", str(tmp_path))
    assert r2.returncode == 0, r2.stderr[-3000:]
    merged = json.loads((tmp_path / "etth1.json").read_text())
    assert merged["seeds"] == [0, 1] and all(a["mse"]["n"] == 2 for a in merged["aggregate"])
    assert "± " in (tmp_path / "etth1.md").read_text()
    assert merged["statistical"]["rows"] == res["statistical"]["rows"] and len(merged["statistical"]["runs"]) == 1
    # --statistical-only: nothing recomputed, the merged files re-rendered from the seed files
    for name in ("etth1.json", "etth1.md"):
        (tmp_path / name).unlink()
    r3 = _bench_run("etth1.py", "--quick", "--statistical-only", "--out", str(tmp_path))
    assert r3.returncode == 0, r3.stderr[-3000:]
    again = json.loads((tmp_path / "etth1.json").read_text())
    assert again["seeds"] == [0, 1] and again["statistical"] == merged["statistical"]
    assert "reused" in r3.stderr and "AutoTheta (statsforecast" in (tmp_path / "etth1.md").read_text()


def _check_etth1_statistical(res: dict, run: dict, out: Path) -> None:
    """The statsforecast rows of a quick ETTh1 run: every model at every horizon, on the models' test
    windows, timed, in the goals and the Markdown, cached in the output folder."""
    st = res["statistical"]
    assert st["lookback"] == 96 and st["missing_horizons"] == [] and st["naive_check_max_abs_diff"] == 0.0
    assert {(r["horizon"], r["model"]) for r in st["rows"]} == {
        (h, m) for h in (24, 48) for m in ("MSTL", "AutoETS", "AutoTheta")}
    windows = {r["horizon"]: r["test_windows"] for r in run["results"]}
    for r in st["rows"]:
        assert r["test_windows"] == windows[r["horizon"]] and r["test_mse_std"] > 0 and r["lookback"] == 96
        assert r["cpu_seconds"] == pytest.approx(r["fit_cpu_seconds"] + r["score_cpu_seconds"], abs=0.02)
        assert r["cpu_seconds"] > 0 and r["periods"] == [24]  # a 96-row window holds 24 twice, not 168
    for g in res["goals"]["by_horizon"]:
        assert set(g["vs_statistical"]) == {"MSTL", "AutoETS", "AutoTheta"}
        best = min([b["test_mse_std"] for b in res["baselines"] if b["horizon"] == g["horizon"]]
                   + [r["test_mse_std"] for r in st["rows"] if r["horizon"] == g["horizon"]])
        assert g["best_baseline"]["mse"] == best
    cache = json.loads((out / "etth1_statistical.json").read_text())
    assert list(cache) == [st["key"]] and len(cache[st["key"]]["runs"]) == 1
    md = (out / "etth1.md").read_text()
    assert "MSTL (statsforecast, fitted on train, fixed)" in md and "ahead of MSTL" in md and "CPU seconds" in md


@pytest.mark.slow
@_needs_bench_data
@slow_bench
def test_benchmark_family_mix_quick(tmp_path):
    """The families' combination on ETTh2 through the real train flow: each rule's champion is its lowest
    validation-backtest row, and the combined row is there exactly where the check recorded it kept."""
    res = _bench_quick("family_mix.py", "family_mix", tmp_path)
    (run,) = res["per_seed"]
    models = run["models"]
    assert {"gru", "lstm", "linear"} <= set(models) and run["check"]["combined_families"]
    kept = (len(run["check"]["combined_families"].split(",")) > 1
            and float(run["check"]["combine_check_combined"]) <= float(run["check"]["combine_check_single"]))
    assert ("combined" in models) == kept
    assert run["champions"]["families"] == min(("gru", "lstm"), key=lambda m: models[m]["val"])
    assert run["champions"]["with_combined"] == min((m for m in ("gru", "lstm", "combined") if m in models),
                                                    key=lambda m: models[m]["val"])
    assert res["summary"]["test"]["verdict"] == "one seed: no verdict"


@pytest.mark.slow
@_needs_bench_data
@slow_bench
def test_benchmark_m4_hourly_quick(tmp_path):
    res = _bench_quick("m4_hourly.py", "m4_hourly", tmp_path)
    assert res["n_series"] == 20 and res["seeds"] == [0]
    for key in ("gru_single", "gru_ensemble", "lstm_single", "lstm_ensemble"):
        head = res["per_seed"][0]["ours"][key]
        assert head["owa"] == pytest.approx(0.5 * (head["smape"] / 18.383 + head["mase"] / 2.395))
        assert res["aggregate"][key]["owa"]["mean"] == pytest.approx(head["owa"])
    assert {"Naive", "sNaive", "sNaive168", "Naive2", "Linear"} <= set(res["baselines_recomputed"])
    # train's families' combination: recorded, and "default" is the combination where the check keeps it
    ours, check = res["per_seed"][0]["ours"], res["per_seed"][0]["combination_check"]
    assert set(check["combined_families"].split(",")) <= {"gru", "lstm"} and {"combined", "default"} <= set(ours)
    best = check["combined_families"].split(",")[0]
    assert ours["default"] == (ours["combined"] if check["combines"] else ours[f"{best}_checked"])
    # statsforecast rows, fitted per series, computed by this (first) seed and cached for later ones
    st = res["statistical"]
    assert set(st["rows"]) == {"MSTL", "AutoETS", "AutoTheta"} and st["computed_by_seeds"] == [0]
    for row in st["rows"].values():
        assert row["owa"] == pytest.approx(0.5 * (row["smape"] / 18.383 + row["mase"] / 2.395))
        assert row["cpu_seconds"] > 0 and row["wall_seconds"] > 0
    assert (tmp_path / "m4_hourly_statistical.json").is_file()
    assert "MSTL (statsforecast" in (tmp_path / "m4_hourly.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FORECASTING_SLOW_BENCH") != "1",
                    reason="the demo benchmark's smoke run (~80 s) runs with FORECASTING_SLOW_BENCH=1, outside CI's "
                           "15-minute budget; the train flow it drives is run by tests/test_flows.py and tests/test_cli.py")
def test_benchmark_demo_quick(tmp_path):
    """The demo's training job through the real train flow; margins to the best baseline per family."""
    res = _bench_quick("demo.py", "demo", tmp_path)
    (run,) = res["per_seed"]
    models = [r["model"] for r in run["rows"]]
    assert models[:2] == ["gru", "lstm"] and {"naive", "linear", "seasonal_naive_24"} <= set(models)
    best = min((r for r in run["rows"] if r["model"] not in ("gru", "lstm", "combined", "champion")),
               key=lambda r: r["mase"])
    assert run["best_baseline"] == best["model"]
    # the champion row is the model the demo forecasts with: the best on the validation backtest
    champ = next(r for r in run["rows"] if r["model"] == "champion")
    contenders = [r for r in run["rows"] if r["model"] in ("gru", "lstm", "combined")]
    assert champ["winner"] == run["champion"] == min(contenders, key=lambda r: r["val_backtest_mase"])["model"]
    assert champ["mase"] == next(r["mase"] for r in contenders if r["model"] == champ["winner"])
    gru = next(r for r in run["rows"] if r["model"] == "gru")
    assert res["margins"]["gru"]["mean"] == pytest.approx(gru["mase"] / best["mase"] - 1)
    # statsforecast rows on the same test windows; the margins to the best baseline include them
    st = res["statistical"]
    assert set(st["rows"]) == {"MSTL", "AutoETS", "AutoTheta"} and st["complete"]
    assert st["simple_check_max_abs_diff"] == pytest.approx(0.0, abs=1e-12)
    for row in st["rows"].values():
        assert row["mase"] > 0 and row["score_cpu_seconds"] > 0 and row["test_windows"] == 7 * (480 - 24 + 1)
    best_all = min([best["mase"]] + [r["mase"] for r in st["rows"].values()])
    assert res["margins_with_statistical"]["gru"]["mean"] == pytest.approx(gru["mase"] / best_all - 1)
    assert set(res["ahead_of_statistical"]["lstm"]) == set(st["rows"])
    assert "MSTL (statsforecast, fitted on train, fixed)" in (tmp_path / "demo.md").read_text()
    # --statistical-only reuses the cache and re-renders demo.json/demo.md from the seed file
    (tmp_path / "demo.json").unlink()
    r = _bench_run("demo.py", "--quick", "--statistical-only", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "demo.json").read_text())
    assert "reused" in r.stderr and again["statistical"] == st and again["seeds"] == [0]


@pytest.mark.slow
@_needs_bench_data
@slow_bench
def test_benchmark_speed_quick(tmp_path):
    res = _bench_quick("speed.py", "speed", tmp_path, "--peers", "skip")
    w, t, b = res["windowing"], res["training"], res["batch"]
    assert w["identical_to_loop"] and w["view_shares_memory_with_input"]
    assert w["view_peak_over_input"] < w["lookback"]  # the view does not copy every window
    assert t["fit_best"] > 0 and t["bare_best"] > 0
    assert b["n_series"] == 200 and set(b["models"]) == {"segment1", "segment24"}
    assert all(m["series_per_second"] > 0 for m in b["models"].values())
    code = res["code"]
    assert len(code["script_sha256"]) == 64 and code["script"].endswith("speed.py")
    assert isinstance(code["untracked"], int) and code["dirty"] == bool(code["modified"] + code["untracked"])
    p = res["peers"]
    same, defaults = p["same"]["runs"], p["defaults"]["runs"]
    # (d1) library overhead: our run of the shared step-by-step GRU, never the segmented model
    assert same["ours"]["status"] == "ok" and same["ours"]["settings"]["segment"] == 1
    # (d2) default configurations: ours records its test MSE after every epoch
    assert defaults["ours"]["status"] == "ok" and len(defaults["ours"]["curve"]) == defaults["ours"]["epochs"]
    for runs in (same, defaults):
        assert runs["neuralforecast"]["status"] == "skipped" and runs["darts"]["status"] == "skipped"
    assert p["same"]["comparisons"] == [] and p["defaults"]["comparisons"] == []
    assert res["goals"]["peers_same_model_5x_at_equal_or_better_mse"] is None
    md = (tmp_path / "speed.md").read_text()
    assert "(d1) Library overhead" in md and "not a library-speed comparison" in md and "not measured" in md
    assert f"sha256 {code['script_sha256'][:12]}" in md


@slow_bench
def test_benchmark_ceiling_quick(tmp_path):
    """ceiling.py --quick: each workload alone and two at once; the speed-up is 2 x alone / slower pair."""
    res = _bench_quick("ceiling.py", "ceiling", tmp_path)
    for w in res["workloads"]:
        (alone,), (pair,) = w["alone_s"], w["together_s"]
        assert alone > 0 and len(pair) == 2 and min(pair) > 0
        assert w["speedup"] == pytest.approx(2 * alone / max(pair))
    assert [w["workload"] for w in res["workloads"]] == ["training epochs", "batch-forecast part", "pure-Python loop"]
    assert "Two workers' ceiling" in (tmp_path / "ceiling.md").read_text()


@slow_bench
def test_benchmark_allocator_quick(tmp_path):
    """allocator.py --quick: each setting in its own process, with the environment that defines it (what
    the setting changes is tested in test_allocator.py)."""
    res = _bench_quick("allocator.py", "allocator", tmp_path)
    rows = {r["mode"]: r for r in res["rows"]}
    assert list(rows) == ["glibc default", "Dask worker default", "ours"]
    assert rows["Dask worker default"]["env"] == {"MALLOC_TRIM_THRESHOLD_": "65536"} and rows["ours"]["env"] == {}
    for r in rows.values():
        assert r["epoch"]["best"] > 0 and r["forecast"]["best"] > 0 and len(r["forecast"]["faults"]) == 1
    assert "## Allocator setting" in (tmp_path / "allocator.md").read_text()


def test_benchmark_missing_data_dir_fails_clearly(tmp_path):
    for script in ("etth1.py", "m4_hourly.py", "speed.py"):
        r = _bench_run(script, "--quick", "--out", str(tmp_path), "--data-dir", str(tmp_path / "nowhere"),
                       timeout=120)
        assert r.returncode != 0
        assert "benchmark data not found" in r.stderr and "--data-dir" in r.stderr
        assert not list(tmp_path.glob("*.json"))


_REPORT_SECTIONS = ("etth1", "etth1_h24_intervals", "m4_hourly", "demo", "forms", "ensemble_choice", "family_mix", "speed",
                    "scaleout", "cluster", "ceiling")


def _report(results: Path, out: Path) -> str:
    r = _bench_run("report.py", "--results", str(results), "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stderr[-4000:]
    text = out.read_text()
    assert text.startswith("## Results")
    return text


def test_benchmark_report_links_every_committed_result(tmp_path):
    """report.py on the committed results: every section's JSON is there, so each is rendered with its
    run's date and a link to its detailed report, and none is called missing."""
    results = _BENCH_REPO / "benchmarks" / "results"
    out = tmp_path / "README.md"
    text = _report(results, out)
    for name in _REPORT_SECTIONS:
        res = json.loads((results / f"{name}.json").read_text())  # committed: a missing one fails here
        (link,) = re.findall(rf"\[{name}\.md\]\(([^)]+)\)", text)
        assert (out.parent / link).resolve() == (results / f"{name}.md").resolve(), link  # relative to out
        assert f"<sub>{res['date'][:10]}, " in text, name
    assert "is missing" not in text


def test_benchmark_report_uses_only_json_and_names_what_is_missing(tmp_path):
    """report.py on a folder holding only etth1.json (no Markdown beside it): that section is rendered
    from the JSON alone, and each other section says its JSON is missing, with no link."""
    results = tmp_path / "results"
    results.mkdir()
    src = json.loads((_BENCH_REPO / "benchmarks" / "results" / "etth1.json").read_text())
    (results / "etth1.json").write_text(json.dumps(src))
    text = _report(results, tmp_path / "README.md")
    assert re.findall(r"\[etth1\.md\]\(([^)]+)\)", text) == ["results/etth1.md"]
    assert f"<sub>{src['date'][:10]}, " in text
    assert f"seed {src['seed']}, wall time" in text
    for name in _REPORT_SECTIONS[1:]:
        assert f"`{name}.json` is missing" in text, name
        assert f"[{name}.md](" not in text, name
    assert text.count("is missing") == len(_REPORT_SECTIONS) - 1
    assert sorted(p.name for p in results.iterdir()) == ["etth1.json"]  # it wrote nothing beside the JSON

"""`ingot bench` against a real service on the real default model: the JSON report's shape and
sanity (numbers present and positive), and the table."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import DEFAULT_ONNX_ID
from tests.e2e.cli_helpers import kill_service, run, service
from tests.e2e.rest_server import copy_home, running

ALIAS = "smollm2-135m"


def test_bench_json_report(seeded_home: Path) -> None:
    try:
        # No service yet: bench starts one.
        proc = run(
            seeded_home,
            "bench",
            ALIAS,
            "--concurrency",
            "1,2",
            "--tokens",
            "16",
            "--prompt-tokens",
            "64",
            "--rounds",
            "2",
            "-o",
            "json",
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
    finally:
        kill_service(seeded_home)
    assert report["model"] == DEFAULT_ONNX_ID
    assert report["url"].startswith("http://127.0.0.1:")
    assert report["peakRssBytes"] > 50 * 1024 * 1024  # a loaded model is there
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    for lv in report["levels"]:
        assert lv["errors"] == 0
        assert lv["requests"] == lv["concurrency"] * 2
        assert lv["completionTokens"] > 0
        assert lv["promptTokens"] >= 32  # about the length asked for
        assert lv["aggregateTps"] > 0
        assert lv["wallS"] > 0
        for key in ("ttftMs", "latencyMs", "decodeTps", "prefillTps"):
            stats = lv[key]
            assert stats["p50"] > 0, key
            assert stats["p95"] >= stats["p50"], key
            assert stats["mean"] > 0, key
        assert lv["latencyMs"]["p50"] >= lv["ttftMs"]["p50"]


def test_bench_table(seeded_home: Path) -> None:
    with service(seeded_home):
        proc = run(
            seeded_home,
            "bench",
            ALIAS,
            "--concurrency",
            "1",
            "--tokens",
            "8",
            "--prompt-tokens",
            "32",
            "--rounds",
            "1",
        )
        assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("model:") and DEFAULT_ONNX_ID in line for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("CONCURRENCY"))
    row = lines[header + 1].split()
    assert row[0] == "1"
    assert row[1] == "1"
    assert all(float(x) > 0 for x in row[2:])
    bad = run(seeded_home, "bench", ALIAS, "--concurrency", "0")
    assert bad.returncode == 2
    assert "hint:" in bad.stderr


def test_bench_compares_with_another_openai_server(
    seeded_home: Path, seeded_home_template: Path, tmp_path: Path
) -> None:
    """`--compare URL` runs the same load against another OpenAI-compatible server: here a
    second Ingot server stands in for llama.cpp's (which takes ~26 min to build, see
    scripts/bench_llamacpp.py for that comparison)."""
    other_home = copy_home(seeded_home_template, tmp_path / "other-home")
    with running(other_home) as other, service(seeded_home):
        proc = run(
            seeded_home,
            "bench",
            ALIAS,
            "--concurrency",
            "1,2",
            "--tokens",
            "12",
            "--prompt-tokens",
            "48",
            "--rounds",
            "1",
            "--compare",
            other.url,
            "--compare-model",
            ALIAS,
            "-o",
            "json",
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        table = run(
            seeded_home, "bench", ALIAS, "--concurrency", "1", "--tokens", "8",
            "--prompt-tokens", "32", "--rounds", "1", "--compare", other.url,
        )  # fmt: skip
        assert table.returncode == 0, table.stderr
        assert "Ingot / the other server" in table.stdout
        # A server that is not there is a clear error, not a traceback, before any benchmark.
        gone = run(seeded_home, "bench", ALIAS, "--compare", "http://127.0.0.1:9")
        assert gone.returncode == 1 and "Cannot use http://127.0.0.1:9" in gone.stderr
        assert "Traceback" not in gone.stderr
    theirs = report["compare"]
    assert theirs["url"] == other.url and theirs["model"] == ALIAS
    assert [lv["concurrency"] for lv in theirs["levels"]] == [1, 2]
    for lv in theirs["levels"] + report["levels"]:
        assert lv["errors"] == 0 and lv["completionTokens"] > 0
        assert lv["clientDecodeTps"]["p50"] > 0 and lv["ttftMs"]["p50"] > 0
    for r in report["ratios"]:
        # The same model on the same machine: both sides are within a few times of each other.
        assert 0.2 < r["decode"] < 5 and 0.2 < r["aggregate"] < 5 and r["ttft"] > 0

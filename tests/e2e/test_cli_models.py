"""`ingot` as a real subprocess, no service running: help, model list/info (text and JSON), errors,
one-shot `model run`, cache and hardware commands, on the real default model."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.conftest import DEFAULT_HF_ID, DEFAULT_ONNX_ID
from tests.e2e.cli_helpers import ANSI, run, run_json

ALIAS = "smollm2-135m"


def test_help_is_fast_and_lists_commands(empty_home: Path) -> None:
    best = float("inf")
    for _ in range(3):  # the machine is shared: take the best of a few
        t0 = time.perf_counter()
        proc = run(empty_home, "--help", check=True)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"`ingot --help` took {best:.2f} s"
    for command in ("model", "cache", "service", "hardware", "bench", "engine"):
        assert command in proc.stdout


def test_model_list_text_is_plain_when_piped(seeded_home: Path) -> None:
    proc = run(seeded_home, "model", "list", check=True)
    assert not ANSI.search(proc.stdout.replace("\r", "")), "decorations in piped output"
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "ALIAS",
        "ID",
        "DEVICE",
        "RUNTIME",
        "SIZE",
        "CONTEXT",
        "CACHED",
        "LOADED",
        "FITS",
    ]
    row = next(line for line in lines if DEFAULT_ONNX_ID in line).split()
    assert row[0] == ALIAS
    assert row[2:4] == ["cpu", "onnx-genai"]
    assert "yes" in row[6:]  # cached


def test_model_list_json_and_filters(seeded_home: Path) -> None:
    data = run_json(seeded_home, "model", "list")
    by_id = {m["id"]: m for m in data["models"]}
    m = by_id[DEFAULT_ONNX_ID]
    assert m["cached"] is True
    assert m["loaded"] is False
    assert m["alias"] == ALIAS
    assert m["contextLength"] > 0
    assert m["sizeBytes"] > 0
    assert isinstance(m["fits"], bool)
    assert m["fitReason"]

    onnx = run_json(seeded_home, "model", "list", "--filter", "runtime=onnx", "device=cpu")
    assert onnx["models"]
    assert all(x["framework"] == "onnx" for x in onnx["models"])
    assert all(x["device"] == "cpu" for x in onnx["models"])
    chat = run_json(seeded_home, "model", "list", "--filter", "task=chat")
    assert DEFAULT_ONNX_ID in {x["id"] for x in chat["models"]}
    cached = run_json(seeded_home, "model", "list", "--cached", "--all")
    assert {DEFAULT_ONNX_ID, DEFAULT_HF_ID} <= {x["id"] for x in cached["models"]}
    everything = run_json(seeded_home, "model", "list", "--all")
    assert len(everything["models"]) >= len(data["models"])


def test_model_info_text_json_and_license(seeded_home: Path) -> None:
    proc = run(seeded_home, "model", "info", ALIAS, check=True)
    assert re.search(rf"^id:\s+{re.escape(DEFAULT_ONNX_ID)}$", proc.stdout, re.M)
    assert re.search(r"^cached:\s+yes", proc.stdout, re.M)
    assert re.search(r"^fits:\s+", proc.stdout, re.M)

    info = run_json(seeded_home, "model", "info", DEFAULT_ONNX_ID)
    assert info["id"] == DEFAULT_ONNX_ID
    assert info["cached"] is True
    assert info["path"]

    lic = run(seeded_home, "model", "info", ALIAS, "--license", check=True)
    assert info["license"] in lic.stdout
    lic_json = run_json(seeded_home, "model", "info", ALIAS, "--license")
    assert lic_json["license"] == info["license"]
    assert lic_json["id"] == DEFAULT_ONNX_ID


def test_errors_are_one_line_with_a_hint(seeded_home: Path) -> None:
    proc = run(seeded_home, "model", "info", "smollm2-135")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert "smollm2-135" in lines[0]
    assert lines[1].startswith("hint: ")
    assert ALIAS in lines[1]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""

    debug = run(seeded_home, "model", "info", "smollm2-135", "--debug")
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr

    usage = run(seeded_home, "model", "list", "--filter", "colour=red")
    assert usage.returncode == 2
    assert usage.stderr.startswith("error: ")
    bad_flag = run(seeded_home, "model", "list", "--no-such-flag")
    assert bad_flag.returncode == 2
    assert "hint:" in bad_flag.stderr

    unload = run(seeded_home, "model", "unload", ALIAS)
    assert unload.returncode == 1
    assert "no Ingot service is running" in unload.stderr


def test_run_one_shot_prints_only_the_answer(seeded_home: Path) -> None:
    proc = run(
        seeded_home,
        "model",
        "run",
        ALIAS,
        "--prompt",
        "Say hello in one short sentence.",
        "--max-tokens",
        "24",
        "--temperature",
        "0",
        check=True,
    )
    assert proc.stdout.strip(), proc.stderr
    assert proc.stdout.endswith("\n")
    assert "Loading" not in proc.stdout
    assert "tokens/s" not in proc.stdout


def test_run_reads_the_prompt_from_stdin(seeded_home: Path) -> None:
    proc = run(
        seeded_home,
        "model",
        "run",
        ALIAS,
        "--max-tokens",
        "16",
        input="What is the capital of France?",
        check=True,
    )
    assert proc.stdout.strip()
    empty = run(seeded_home, "model", "run", ALIAS, input="")
    assert empty.returncode == 2
    assert "empty" in empty.stderr


def test_cache_commands(seeded_home: Path) -> None:
    location = run(seeded_home, "cache", "location", check=True).stdout.strip()
    assert Path(location) == seeded_home / "cache"
    listing = run(seeded_home, "cache", "list", check=True)
    assert DEFAULT_ONNX_ID in listing.stdout
    assert listing.stdout.splitlines()[0].startswith("ID")
    data = run_json(seeded_home, "cache", "list")
    assert data["models"] == 2
    assert {e["id"] for e in data["entries"]} == {
        DEFAULT_ONNX_ID,
        DEFAULT_HF_ID,
    }
    verify = run_json(seeded_home, "cache", "verify", DEFAULT_ONNX_ID)
    assert verify["ok"] is True
    assert verify["problems"] == {DEFAULT_ONNX_ID: []}

    # A damaged file is named, with a non-zero exit and what to do.
    entry = next(e for e in data["entries"] if e["id"] == DEFAULT_ONNX_ID)
    cfg = Path(entry["path"]) / "genai_config.json"
    text = cfg.read_text()
    cfg.unlink()  # a hard link into the shared template: replace it, never write through it
    cfg.write_text(text + " ")
    bad = run(seeded_home, "cache", "verify")
    assert bad.returncode == 1
    assert "genai_config.json" in bad.stdout
    assert "hint:" in bad.stderr


def test_remove_then_list_shows_it_gone(seeded_home: Path) -> None:
    proc = run(seeded_home, "model", "remove", DEFAULT_HF_ID, check=True)
    assert "Removed" in proc.stdout
    ids = {x["id"] for x in run_json(seeded_home, "cache", "list")["entries"]}
    assert ids == {DEFAULT_ONNX_ID}
    again = run(seeded_home, "model", "remove", DEFAULT_HF_ID)
    assert again.returncode == 1
    assert "not in the cache" in again.stderr


def test_hardware_text_and_json(seeded_home: Path) -> None:
    proc = run(seeded_home, "hardware", check=True)
    assert re.search(r"^cpu:\s+\S", proc.stdout, re.M)
    assert "What can run here" in proc.stdout
    assert DEFAULT_ONNX_ID in proc.stdout
    data = run_json(seeded_home, "hardware")
    assert data["hardware"]["cpuCoresLogical"] >= 1
    assert "cpu" in data["hardware"]["devices"]
    assert any(m["id"] == DEFAULT_ONNX_ID for m in data["models"])


@pytest.mark.parametrize("args", [["model", "list"], ["cache", "list"], ["hardware"]])
def test_json_output_is_valid_json_only(seeded_home: Path, args: list[str]) -> None:
    proc = run(seeded_home, *args, "-o", "json", check=True)
    json.loads(proc.stdout)


def test_cache_cd_moves_the_cache(seeded_home: Path, tmp_path: Path) -> None:
    dest = tmp_path / "moved-cache"
    proc = run(seeded_home, "cache", "cd", str(dest), check=True)
    assert str(dest) in proc.stdout
    assert run(seeded_home, "cache", "location", check=True).stdout.strip() == str(dest)
    info = run_json(seeded_home, "model", "info", ALIAS)
    assert info["cached"] is True
    assert info["path"].startswith(str(dest))
    not_a_folder = run(seeded_home, "cache", "cd", str(Path(info["path"]) / "genai_config.json"))
    assert not_a_folder.returncode == 1
    assert "not a folder" in not_a_folder.stderr

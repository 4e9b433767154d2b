"""Child step `python -m engine.compile.gguf_to_hf GGUF OUT`: GGUF -> float32 safetensors HF folder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from engine.compile.reporting import StepReporter, run_as_child

REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def convert(gguf: Path, out: Path, report: StepReporter) -> dict[str, Any]:
    """Dequantise `gguf` into `out`. Heavy imports live here so that importing the module is cheap."""
    report.progress(0.02, "Loading torch and transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    report.progress(0.08, f"Reading and dequantising {gguf.name}")
    # transformers reads GGUF (through `gguf`, with accelerate) and dequantises every tensor.
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    report.progress(0.55, "Rebuilding a plain float32 model")
    config = loaded.config
    # A model loaded from GGUF carries a gguf quantization_config, and save_pretrained refuses to
    # save "a model quantized with gguf"; a plain model built from the same config saves normally.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    # GGUF configs name no architecture; the ONNX builder dispatches on it.
    config.architectures = [type(loaded).__name__]
    # Built on the meta device and given the loaded tensors (assign=True): no random init and no
    # second copy of the weights. Its non-persistent buffers (rotary tables) stay on meta, which is
    # fine because the model is only saved, never run.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    del loaded

    # float32, not float16: the dequantised Q4_1 values are exact in fp32 and often not in fp16.
    report.progress(0.62, "Saving float32 safetensors")
    plain.save_pretrained(str(out), safe_serialization=True)
    context_length = int(getattr(config, "max_position_embeddings", 0) or 0)
    del plain

    report.progress(0.72, "Building the tokenizer from GGUF")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if context_length:
        # HF's "no limit" default (1e30) serialises as a huge integer some readers choke on.
        tokenizer.model_max_length = context_length
    tokenizer.save_pretrained(str(out))
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    portable_tokenizer_config(out, template)
    readable_files(out)

    report.progress(0.98, "Checking the output folder")
    missing = [name for name in REQUIRED_FILES if not (out / name).is_file()]
    if missing:
        raise RuntimeError(f"the conversion did not write {', '.join(missing)}")
    return {"chat_template": template is not None, "context_length": context_length}


def portable_tokenizer_config(out: Path, template: str | None) -> None:
    """Make tokenizer_config.json readable by other transformers versions and tools.

    transformers 5 writes the chat template to chat_template.jinja only and names its own class
    (TokenizersBackend), which transformers 4 (e.g. in a vLLM environment) cannot resolve; it also
    records loader-only flags. PreTrainedTokenizerFast is the tokenizer.json class in both.
    """
    path = out / "tokenizer_config.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for loader_only in ("is_local", "local_files_only"):
        data.pop(loader_only, None)
    if data.get("tokenizer_class") == "TokenizersBackend":
        data["tokenizer_class"] = "PreTrainedTokenizerFast"
    if template:
        data["chat_template"] = template
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def readable_files(out: Path) -> None:
    """safetensors writes owner-only files; the folder goes into a cache other tools read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m engine.compile.gguf_to_hf GGUF OUT_DIR", file=sys.stderr)
        return 2
    gguf, out = Path(argv[0]).resolve(), Path(argv[1]).resolve()

    def body(report: StepReporter) -> dict[str, Any]:
        out.mkdir(parents=True, exist_ok=True)
        return convert(gguf, out, report)

    return run_as_child(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

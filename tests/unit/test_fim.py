"""Fill-in-the-middle: a model whose catalog entry says `fim` gets its own FIM prompt, raw; any
other model gets the text around the cursor as an instruction in its chat template."""

from __future__ import annotations

import json
from pathlib import Path

from engine.bootstrap import build_engine
from engine.config import EngineConfig
from engine.requests import CompletionRequest, GenerationResult
from tests.unit.fakes import FakeRuntime

FIM = "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"


def catalog(path: Path, folder: Path) -> Path:
    def entry(name: str, fim: bool) -> dict[str, object]:
        return {
            "name": name,
            "version": 1,
            "alias": name,
            "display_name": name,
            "publisher": "test",
            "device": "cpu",
            "framework": "onnx",
            "source": {"kind": "local", "path": str(folder)},
            "size_bytes": 1000,
            "context_length": 4096,
            "license": "MIT",
            "capabilities": {"chat": True, "fim": fim},
            "prompt_template": {"fim": FIM} if fim else None,
        }

    variants = [entry("coder", True), entry("chatty", False)]
    path.write_text(json.dumps({"schema": 1, "variants": variants}), encoding="utf-8")
    return path


async def test_fim_models_get_their_fim_prompt_others_an_instruction(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    rt = FakeRuntime()
    svc = build_engine(
        EngineConfig(
            home=tmp_path / "home", extra_catalogs=(catalog(tmp_path / "c.json", folder),)
        ),
        runtimes={"onnx-genai": rt},  # type: ignore[dict-item]
    )
    await svc.start()
    try:
        for model in ("coder", "chatty"):
            async for ev in svc.complete(CompletionRequest(model, "def add(a, b):\n    ", "\n")):
                if isinstance(ev, GenerationResult):
                    break
        coder, chatty = (inst.prompts[-1] for inst in rt.instances)
        assert coder == "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>"
        assert "<CURSOR>" in chatty and "fim_prefix" not in chatty
    finally:
        await svc.close()


def test_fim_substitution_keeps_braces_in_the_users_code() -> None:
    import re

    parts = {"prefix": 'print(f"{suffix}")', "suffix": "{prefix}"}
    out = re.sub(r"\{(prefix|suffix)\}", lambda m: parts[m[1]], FIM)
    assert out == '<|fim_prefix|>print(f"{suffix}")<|fim_suffix|>{prefix}<|fim_middle|>'

"""OnnxSession: one ONNX Runtime GenAI model and its blocking token loop (used inside the worker).

Everything here blocks and holds the GIL while onnxruntime-genai computes, which is why it runs in
a model's own worker process (see onnx_worker.py), never on the engine's event loop.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Emit = Callable[[dict[str, Any]], None]


def search_options(params: dict[str, Any], max_length: int) -> dict[str, Any]:
    """Sampling settings (engine SamplingParams as a dict) -> ORT GenAI search options."""
    opts: dict[str, Any] = {"max_length": max_length}
    temperature = params.get("temperature")
    greedy = temperature is not None and temperature <= 0
    if temperature is not None and not greedy:
        opts["temperature"] = float(temperature)
    if params.get("top_p") is not None:
        opts["top_p"] = float(params["top_p"])
    if params.get("top_k") is not None:
        opts["top_k"] = int(params["top_k"])
    if params.get("repetition_penalty") is not None:
        opts["repetition_penalty"] = float(params["repetition_penalty"])
    if params.get("seed") is not None:
        opts["random_seed"] = int(params["seed"])
    sampled = any(params.get(k) is not None for k in ("temperature", "top_p", "top_k"))
    opts["do_sample"] = not greedy and sampled
    return opts


class OnnxSession:
    def __init__(self, folder: Path, device: str, threads: int) -> None:
        import onnxruntime_genai as og

        self._og = og
        cfg = og.Config(str(folder))
        # The provider follows the variant, not whatever genai_config.json happens to name.
        cfg.clear_providers()
        if device == "cuda":
            cfg.append_provider("cuda")
        # Thread count is a session option; overlay it rather than editing the model's files.
        cfg.overlay(
            json.dumps(
                {"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}
            )
        )
        self.model = og.Model(cfg)
        self.tokenizer = og.Tokenizer(self.model)
        genai = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        self.context_length = int(genai["model"]["context_length"])
        self.eos = {int(t) for t in self.tokenizer.eos_token_ids}

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        return str(
            self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        )

    def run(
        self,
        rid: int,
        prompt: str,
        params: dict[str, Any],
        constraint: dict[str, str] | None,
        max_new: int,
        halt: threading.Event,
        emit: Emit,
    ) -> None:
        """Generate until EOS, max_new tokens or `halt`; emit text events, then one stats event.

        `halt` is checked before every token, so a cancellation lands within one token."""
        og = self._og
        started = time.monotonic()
        first: float | None = None
        produced = 0
        finish = "length"
        tokens = [int(t) for t in self.tokenizer.encode(prompt)]
        max_new = max(1, min(max_new, self.context_length - len(tokens)))
        try:
            gp = og.GeneratorParams(self.model)
            gp.set_search_options(**search_options(params, len(tokens) + max_new))
            if constraint is not None:
                gp.set_guidance(constraint["kind"], constraint["text"])
            gen = og.Generator(self.model, gp)
            stream = self.tokenizer.create_stream()
            if not halt.is_set():
                gen.append_tokens(tokens)
            while not halt.is_set() and not gen.is_done():
                gen.generate_next_token()
                tok = int(gen.get_next_tokens()[0])
                if first is None:
                    first = time.monotonic()
                if tok in self.eos:
                    finish = "stop"
                    break
                produced += 1
                emit({"id": rid, "text": stream.decode(tok), "n": produced})
                if produced >= max_new:
                    break
            if halt.is_set():
                finish = "halted"
            del gen
        except Exception as e:  # the runtime's own errors, surfaced as a clean engine error
            emit({"id": rid, "error": f"Generation failed in ONNX Runtime GenAI: {e}"})
            return
        emit(
            {
                "id": rid,
                "stats": {
                    "prompt_tokens": len(tokens),
                    "completion_tokens": produced,
                    "started": started,
                    "first_token": first,
                    "finished": time.monotonic(),
                    "finish_reason": finish,
                },
            }
        )

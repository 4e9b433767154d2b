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

    def start(self, job: dict[str, Any], halt: threading.Event, emit: Emit) -> Sequence:
        """Tokenize and prefill one request; its tokens then come from Sequence.step()."""
        return Sequence(self, job, halt, emit)


class Sequence:
    """One generation on a shared model: its own og.Generator (and KV cache), stepped a token
    at a time by the worker's scheduler, so several can take turns and any can pause."""

    def __init__(
        self, session: OnnxSession, job: dict[str, Any], halt: threading.Event, emit: Emit
    ) -> None:
        og = session._og
        self.rid = int(job["id"])
        self.priority = int(job.get("priority", 1))
        self.halt = halt
        self.done = False
        self.last_step = 0.0
        self._session = session
        self._emit = emit
        self._started = time.monotonic()
        self._first: float | None = None
        self._produced = 0
        self._gen: Any = None
        self._prompt_tokens = 0
        try:
            tokens = [int(t) for t in session.tokenizer.encode(job["prompt"])]
            self._prompt_tokens = len(tokens)
            self._max_new = max(1, min(int(job["max_new"]), session.context_length - len(tokens)))
            gp = og.GeneratorParams(session.model)
            gp.set_search_options(
                **search_options(job.get("params") or {}, len(tokens) + self._max_new)
            )
            if (constraint := job.get("constraint")) is not None:
                gp.set_guidance(constraint["kind"], constraint["text"])
            self._gen = og.Generator(session.model, gp)
            self._stream = session.tokenizer.create_stream()
            if not halt.is_set():
                self._gen.append_tokens(tokens)  # the prefill
        except Exception as e:
            self._fail(e)

    def step(self) -> None:
        """Generate one token (or finish: EOS, max tokens, halted)."""
        if self.done:
            return
        if self.halt.is_set():
            self._finish("halted")
            return
        try:
            gen = self._gen
            if gen.is_done():
                self._finish("length")
                return
            gen.generate_next_token()
            tok = int(gen.get_next_tokens()[0])
            self.last_step = time.monotonic()
            if self._first is None:
                self._first = self.last_step
            if tok in self._session.eos:
                self._finish("stop")
                return
            self._produced += 1
            self._emit({"id": self.rid, "text": self._stream.decode(tok), "n": self._produced})
            if self._produced >= self._max_new:
                self._finish("length")
        except Exception as e:  # the runtime's own errors, surfaced as a clean engine error
            self._fail(e)

    def _fail(self, e: Exception) -> None:
        self.done = True
        self._gen = None
        self._emit({"id": self.rid, "error": f"Generation failed in ONNX Runtime GenAI: {e}"})

    def _finish(self, reason: str) -> None:
        self.done = True
        self._gen = None  # frees this sequence's KV cache now, not at the next collection
        self._emit(
            {
                "id": self.rid,
                "stats": {
                    "prompt_tokens": self._prompt_tokens,
                    "completion_tokens": self._produced,
                    "started": self._started,
                    "first_token": self._first,
                    "finished": time.monotonic(),
                    "finish_reason": reason,
                },
            }
        )

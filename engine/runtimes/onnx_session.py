"""OnnxSession: one ONNX Runtime GenAI model and its blocking token loop (used inside the worker).

Everything here blocks and holds the GIL while onnxruntime-genai computes, which is why it runs in
a model's own worker process (see onnx_worker.py), never on the engine's event loop.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Emit = Callable[[dict[str, Any]], None]

# Seconds a sequence may wait for a turn before it goes next whatever its class (the worker's
# scheduler, and the rows of a DecodeBatch).
AGING_S = 2.0


def _flush_s() -> float:
    """Tokens go to the engine in batches at most this far apart (the first at once, the rest of
    a generation when it ends). One message per token cost the decode loop 6-9 % on two cores:
    each message wakes the engine, the JSON-RPC or HTTP writer and the client, and every wake-up
    pre-empts one of ORT's two spinning intra-op threads (docs/performance.md). 50 ms is 20
    screen updates a second; INGOT_TOKEN_FLUSH_MS=0 sends every token on its own."""
    try:
        return max(0.0, float(os.environ.get("INGOT_TOKEN_FLUSH_MS", "50"))) / 1000
    except ValueError:
        return 0.05


FLUSH_S = _flush_s()


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

    def start(self, job: dict[str, Any], halt: threading.Event, emit: Emit) -> GenaiSequence:
        """Tokenize and prefill one request; its tokens then come from Sequence.step()."""
        return GenaiSequence(self, job, halt, emit)


class Sequence:
    """One generation's bookkeeping, whatever computes its tokens: end-of-sequence and the token
    limit, detokenising, batching the text to the engine, and the final stats. Subclasses
    supply step(): GenaiSequence below, or a row of an onnx_batch.DecodeBatch."""

    def __init__(
        self, session: OnnxSession, job: dict[str, Any], halt: threading.Event, emit: Emit
    ) -> None:
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
        self._pending: list[str] = []
        self._flushed = 0.0
        self.prompt: list[int] = []
        self.max_new = 1
        try:
            self.prompt = [int(t) for t in session.tokenizer.encode(job["prompt"])]
            self.max_new = max(
                1, min(int(job["max_new"]), session.context_length - len(self.prompt))
            )
            self._stream = session.tokenizer.create_stream()
        except Exception as e:
            self.fail(e)

    def step(self) -> None:
        """Generate one token (or finish: EOS, max tokens, halted)."""
        raise NotImplementedError

    def accept(self, tok: int) -> None:
        """The token chosen next for this sequence."""
        self.last_step = time.monotonic()
        if self._first is None:
            self._first = self.last_step
        if tok in self._session.eos:
            self.finish("stop")
            return
        self._produced += 1
        self._pending.append(self._stream.decode(tok))
        if self.last_step - self._flushed >= FLUSH_S:
            self._flush()
        if self._produced >= self.max_new:
            self.finish("length")

    def _flush(self) -> None:
        """Send the tokens decoded since the last batch: one text per token, so the engine
        still counts exactly (a stop sequence ends the count at the token that held it)."""
        if self._pending:
            self._emit({"id": self.rid, "texts": self._pending, "n": self._produced})
            self._pending = []
        self._flushed = time.monotonic()

    def _release(self) -> None:
        """Free what computes this sequence's tokens (its KV cache) now, not at the next GC."""

    def fail(self, e: Exception) -> None:
        if self.done:
            return
        self._flush()
        self.done = True
        self._release()
        self._emit({"id": self.rid, "error": f"Generation failed in ONNX Runtime GenAI: {e}"})

    def finish(self, reason: str) -> None:
        if self.done:
            return
        self._flush()
        self.done = True
        self._release()
        self._emit(
            {
                "id": self.rid,
                "stats": {
                    "prompt_tokens": len(self.prompt),
                    "completion_tokens": self._produced,
                    "started": self._started,
                    "first_token": self._first,
                    "finished": time.monotonic(),
                    "finish_reason": reason,
                },
            }
        )


class GenaiSequence(Sequence):
    """A sequence with its own og.Generator (and KV cache), stepped a token at a time by the
    worker's scheduler, so several can take turns and any can pause. Constrained decoding
    (guidance) and seeded sampling always run this way."""

    def __init__(
        self, session: OnnxSession, job: dict[str, Any], halt: threading.Event, emit: Emit
    ) -> None:
        super().__init__(session, job, halt, emit)
        self._gen: Any = None
        self.job = job
        self._guided = job.get("constraint") is not None
        if self.done:
            return
        og = session._og
        try:
            gp = og.GeneratorParams(session.model)
            gp.set_search_options(
                **search_options(job.get("params") or {}, len(self.prompt) + self.max_new)
            )
            if (constraint := job.get("constraint")) is not None:
                gp.set_guidance(constraint["kind"], constraint["text"])
            self._gen = og.Generator(session.model, gp)
            if not halt.is_set():
                self._gen.append_tokens(self.prompt)  # the prefill
        except Exception as e:
            self.fail(e)

    def step(self) -> None:
        if self.done:
            return
        if self.halt.is_set():
            self.finish("halted")
            return
        try:
            gen = self._gen
            # is_done() costs ~2.5 % of decode here (measured); the token limit and EOS are
            # checked in accept() anyway, so only guidance, which can end a generation on
            # its own, needs it.
            if self._guided and gen.is_done():
                self.finish("length")
                return
            gen.generate_next_token()
            self.accept(int(gen.get_next_tokens()[0]))
        except Exception as e:  # the runtime's own errors, surfaced as a clean engine error
            self.fail(e)

    def handover(self, present: list[str]) -> tuple[list[int], list[Any]] | None:
        """For a move into a DecodeBatch: the tokens so far (prompt and output) and the KV
        cache (these present outputs, [1, kv heads, max length, head size]), whose first
        len(tokens) - 1 positions hold every token but the newest. None if it cannot move
        (not started, or already done); after a move this sequence is inert."""
        if self.done or self._gen is None or self._produced < 1:
            return None
        try:
            tokens = [int(t) for t in self._gen.get_sequence(0)]
            kv = [self._gen.get_output(name) for name in present]
        except Exception:
            return None
        self._gen = None
        self.done = True  # its tokens now come from the batch row that took its place
        return tokens, kv

    def _release(self) -> None:
        self._gen = None

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.catalog.variant import KvShape
from engine.runtimes.onnx_speculative import Drafter

Emit = Callable[[dict[str, Any]], None]

# Seconds a sequence may wait for a turn before it goes next whatever its class (the worker's
# scheduler, and the rows of a DecodeBatch).
AGING_S = 2.0


def _flush_s() -> float:
    """Tokens go to the engine in batches at most this far apart (the first at once, the rest of
    a generation when it ends). Every batch wakes the engine and then the client, and each
    wake-up pre-empts one of ORT's two spinning intra-op threads: on two cores one message per
    token cost 6-9 % of decode, a batch every 50 ms ~5 %, every 100 ms ~2 %, every 200 ms ~1 %
    (measured over JSON-RPC, docs/performance.md). 100 ms is 10 screen updates a second, still
    a smooth stream; INGOT_TOKEN_FLUSH_MS=0 sends every token on its own."""
    try:
        return max(0.0, float(os.environ.get("INGOT_TOKEN_FLUSH_MS", "100"))) / 1000
    except ValueError:
        return 0.1


FLUSH_S = _flush_s()

# Fresh generators that may be reused get a KV buffer rounded up to this many positions, so the
# next request fits in it more often (46 KB a position for the default model).
KV_ROUND = 256
# The most KV memory a kept generator may hold while the model is idle (its buffer is as long as
# its max_length): 2 300 positions for the default model, ~1 000 for a 3.8B one.
KEEP_BYTES = 256 * 2**20


def genai_kv_bytes(genai: dict[str, Any], device: str) -> int:
    """KV-cache bytes per position from a genai_config.json (ORT GenAI keeps the CPU KV cache in
    float32 and the CUDA one in float16); 0 if the config does not say."""
    try:
        kv = KvShape.from_genai_config(genai, device)
    except (TypeError, ValueError):
        return 0
    return kv.bytes_per_token() if kv else 0


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


def reuse_key(job: dict[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """What a request's generator must have been made with for the request to run on it (its
    search options, less the length), or None if it needs a generator of its own: guidance
    lives in the generator, and a seeded sampled request must give the same text every time."""
    opts = search_options(job.get("params") or {}, 0)
    if job.get("constraint") is not None or (opts["do_sample"] and "random_seed" in opts):
        return None
    opts.pop("max_length")
    opts.pop("random_seed", None)  # greedy: the seed changes nothing
    return tuple(sorted(opts.items()))


@dataclass
class _Kept:
    gen: Any
    key: tuple[tuple[str, Any], ...]
    max_length: int
    prompt: list[int]  # the positions its last prefill computed
    kept_at: float


class PromptCache:
    """Finished generators kept for the next requests: up to SLOTS of them, within KEEP_BYTES.

    A request that starts the way a kept prompt did (the chat template's system prompt, a
    conversation's earlier turns, the text before the cursor as someone types) takes that
    generator, rewinds it to the prefix they share and prefills only the rest; it also skips
    allocating a KV buffer (~40 ms for the ~2 000 positions of a request without max_tokens,
    here). Several slots, so a chat and the inline completions typed meanwhile do not evict
    each other's prefix. Only positions a prefill computed are reused, not the tokens generated
    after it one at a time: single-token steps round differently from a prefill, and an answer
    would then depend on what ran before (measured: a reused previous answer changed the next
    turn's greedy text). So a request answers token-for-token as on a fresh generator (tested).
    """

    SLOTS = 3
    # A prefix this short is not worth a slot: the request takes the oldest generator (when
    # all slots are used) or a fresh one, and leaves the others' longer prefixes be.
    MIN_SHARED = 16

    def __init__(self, bytes_per_position: int) -> None:
        self._per = bytes_per_position or KEEP_BYTES // 4096
        self._kept: list[_Kept] = []  # oldest first
        self.hits = 0
        self.reused_tokens = 0

    @property
    def held(self) -> bool:
        return bool(self._kept)

    @property
    def kept_at(self) -> float:
        return max((k.kept_at for k in self._kept), default=0.0)

    def keep(
        self, gen: Any, key: tuple[tuple[str, Any], ...], max_length: int, prompt: list[int]
    ) -> None:
        if max_length * self._per > KEEP_BYTES:
            return  # too much memory to sit on while idle
        self._kept.append(_Kept(gen, key, max_length, prompt, time.monotonic()))
        while len(self._kept) > self.SLOTS or self._bytes() > KEEP_BYTES:
            self._kept.pop(0)

    def _bytes(self) -> int:
        return sum(k.max_length for k in self._kept) * self._per

    def drop(self) -> None:
        self._kept.clear()

    def take(
        self, prompt: list[int], key: tuple[tuple[str, Any], ...], need: int
    ) -> tuple[Any, int, int] | None:
        """A kept generator rewound to the prefix it shares with `prompt`, that prefix's length
        and the generator's max_length; None when no generator with these search options fits
        `need` positions, or when none shares a prefix worth it and a slot is free. At least two
        prompt tokens are left to prefill: onnxruntime-genai 0.18 gives wrong logits when one
        token is appended after rewind_to (measured; two or more, and rewinding to 0, give the
        fresh generator's tokens)."""
        if len(prompt) < 2:
            return None
        fits = [k for k in self._kept if k.key == key and need <= k.max_length]
        if not fits:
            return None
        scored = [(common_prefix(k.prompt, prompt, len(prompt) - 2), k) for k in fits]
        n, best = max(scored, key=lambda nk: nk[0])
        if n < self.MIN_SHARED:
            if len(self._kept) < self.SLOTS:
                return None
            n, best = scored[0]  # the oldest: recycle its buffer, keep the longer prefixes
        self._kept.remove(best)
        best.gen.rewind_to(n)
        self.hits += 1
        self.reused_tokens += n
        return best.gen, n, best.max_length


def common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """How many leading tokens `a` and `b` share, counting at most `limit`."""
    import numpy as np

    limit = max(0, min(len(a), len(b), limit))
    differ = np.flatnonzero(
        np.asarray(a[:limit], dtype=np.int64) != np.asarray(b[:limit], dtype=np.int64)
    )
    return int(differ[0]) if differ.size else limit


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
        self.prompt_cache = PromptCache(genai_kv_bytes(genai, device))

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
        self.cached = 0  # prompt tokens whose KV came from an earlier request
        self.max_new = 1
        # Drafts from the request's prediction (onnx_batch rows only; onnx_speculative).
        self.drafter: Drafter | None = None
        try:
            self.prompt = [int(t) for t in session.tokenizer.encode(job["prompt"])]
            self.max_new = max(
                1, min(int(job["max_new"]), session.context_length - len(self.prompt))
            )
            self._stream = session.tokenizer.create_stream()
        except Exception as e:
            self.fail(e)

    @property
    def produced(self) -> int:
        return self._produced

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

    def _release(self, reusable: bool) -> None:
        """Free what computes this sequence's tokens (its KV cache) now, not at the next GC;
        `reusable`: it ended cleanly, so its KV cache may serve the next request."""

    def fail(self, e: Exception) -> None:
        if self.done:
            return
        self._flush()
        self.done = True
        self._release(False)
        self._emit({"id": self.rid, "error": f"Generation failed in ONNX Runtime GenAI: {e}"})

    def finish(self, reason: str) -> None:
        if self.done:
            return
        self._flush()
        self.done = True
        self._release(True)
        self._emit(
            {
                "id": self.rid,
                "stats": {
                    "prompt_tokens": len(self.prompt),
                    "cached_tokens": self.cached,
                    "completion_tokens": self._produced,
                    "started": self._started,
                    "first_token": self._first,
                    "finished": time.monotonic(),
                    "finish_reason": reason,
                    "accepted_prediction_tokens": self.drafter.accepted if self.drafter else 0,
                    "rejected_prediction_tokens": self.drafter.rejected if self.drafter else 0,
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
        self._key = reuse_key(job)
        self._max_length = 0
        if self.done:
            return
        og = session._og
        need = len(self.prompt) + self.max_new
        try:
            if halt.is_set():
                return  # step() reports it halted
            if self._key is not None and (
                kept := session.prompt_cache.take(self.prompt, self._key, need)
            ):
                self._gen, self.cached, self._max_length = kept
                self._gen.append_tokens(self.prompt[self.cached :])  # the rest of the prefill
                return
            # A generator that may be kept gets a rounded-up buffer, so the next request more
            # often fits in it.
            rounded = min(session.context_length, -(-need // KV_ROUND) * KV_ROUND)
            self._max_length = need if self._key is None else max(need, rounded)
            gp = og.GeneratorParams(session.model)
            gp.set_search_options(**search_options(job.get("params") or {}, self._max_length))
            if (constraint := job.get("constraint")) is not None:
                gp.set_guidance(constraint["kind"], constraint["text"])
            self._gen = og.Generator(session.model, gp)
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

    def _release(self, reusable: bool) -> None:
        gen, self._gen = self._gen, None
        if reusable and gen is not None and self._key is not None:
            self._session.prompt_cache.keep(gen, self._key, self._max_length, self.prompt)

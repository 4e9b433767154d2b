"""Continuous batching for an ONNX Runtime GenAI model folder (used inside the model's worker).

onnxruntime-genai 0.18 cannot batch requests of different lengths for models whose pad id also
appears in prompts (SmolLM2's pad is `<|im_end|>`): it masks every pad-id token, so padded rows
decode differently. The builder's models do not need padding, though. Their attention is
GroupQueryAttention, which takes each row's own length (`seqlens_k`, from the attention mask) and
writes each row's new key/value at that row's own position when past and present share one
buffer. So here a plain onnxruntime session runs the same model.onnx over one KV buffer of
[rows, kv heads, capacity, head size] per layer, sized for the rows present and their longest
prompt + max tokens:

- a new request is prefilled alone into a free row (a batch of one over that row's slice), and
  a request already running alone on ORT GenAI moves in with its KV cache (adopt);
- every decode step runs the leading rows of the most urgent latency class at once (rows are
  kept sorted by class), each with its own length (right-padded mask);
- a finished row is replaced by the last one (its valid prefix copied), so rows stay packed.

Greedy output is token-for-token the same as ORT GenAI's for the same prompt (tests check it);
8 rows decode at 2.4-2.8x the aggregate tokens/s of one sequence on 2 cores
(docs/performance.md). A self-check at build time refuses graphs that do not behave this way.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.runtimes.onnx_session import (
    AGING_S,
    Emit,
    GenaiSequence,
    OnnxSession,
    Sequence,
    common_prefix,
    search_options,
)
from engine.runtimes.onnx_speculative import LOGITS_FROM, VERIFY_TOKENS, Drafter, verify_model


def batchable_folder(folder: Path) -> dict[str, Any] | None:
    """The model config if this folder's model may be batched here, else None: one decoder
    graph whose inputs are input_ids, attention_mask and the past KV (no position_ids). That
    its attention honours per-row lengths is proven by DecodeBatch's self-check."""
    try:
        cfg = json.loads((folder / "genai_config.json").read_text(encoding="utf-8"))
        dec = cfg["model"]["decoder"]
        inputs = dec["inputs"]
        if set(inputs) != {"input_ids", "attention_mask", "past_key_names", "past_value_names"}:
            return None
        if "pipeline" in dec or not (folder / dec["filename"]).is_file():
            return None
        return dict(cfg["model"], search=cfg.get("search") or {})
    except (OSError, ValueError, KeyError, TypeError):
        return None


class DecodeBatch:
    """Rows of sequences decoded together by one onnxruntime session; see the module doc."""

    def __init__(self, folder: Path, model_cfg: dict[str, Any], threads: int, rows: int) -> None:
        import onnxruntime as ort

        dec = model_cfg["decoder"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(folder / dec["filename"]), so, providers=["CPUExecutionProvider"]
        )
        self.layers = int(dec["num_hidden_layers"])
        self.context = int(model_cfg["context_length"])
        self.max_rows = rows
        self._heads = (int(dec["num_key_value_heads"]), int(dec["head_size"]))
        names = dec["inputs"]
        outs = dec["outputs"]
        self._names: list[tuple[str, str]] = []
        for i in range(self.layers):
            self._names.append((names["past_key_names"] % i, outs["present_key_names"] % i))
            self._names.append((names["past_value_names"] % i, outs["present_value_names"] % i))
        # Sized for the rows present and their longest prompt + max_new, and dropped when the
        # batch empties: onnxruntime touches a row's whole buffer on its prefill, so a
        # context-sized one would cost ~380 MB of resident memory a row here.
        self._kv: list[np.ndarray] = []
        self._rows_cap = 0
        self.capacity = 0
        self._logits = outs.get("logits", "logits")
        # The verifying session for rows with a prediction (onnx_speculative), built when the
        # first arrives (want_verifier); False if it cannot be.
        self._folder, self._filename, self._threads = folder, str(dec["filename"]), threads
        self._verifier: Any = None
        self._verifier_thread: threading.Thread | None = None
        self._aliases: dict[str, str] = {}
        self._vio: Any = None
        self.drafted = 0  # verifying passes run (for the worker's metrics)
        self.search = model_cfg.get("search") or {}
        self.rows: list[BatchedSequence] = []
        self._bound_rows = -1
        self._io: Any = None
        self._ids = np.zeros((rows, 1), np.int64)
        self.priority = 0
        self.last_step = 0.0
        self.used = time.monotonic()  # when a row last joined (the worker frees idle batches)
        self.steps = 0  # decode steps run, and the tokens they gave (for the worker's metrics)
        self.tokens = 0
        self._self_check()

    def _self_check(self) -> None:
        """Prove the graph appends in place per row before trusting it with requests: three
        tokens prefilled then one decoded must give the logits of all four prefilled at once.
        An attention that ignores per-row lengths or the shared buffer fails this."""
        probe = [1, 2, 3, 4]
        self._ensure(2, len(probe))
        self._prefill(0, probe[:3])
        stepped = self._run_row(0, [probe[3]], len(probe))
        whole = self._prefill(1, probe)
        # Prefill and decode kernels round differently (measured: 0.04 on a logit range of
        # ~30); attention that ignored the rows' lengths would be off by the whole range.
        spread = float(whole.max() - whole.min())
        diff = float(np.abs(stepped - whole).max())
        if stepped.argmax() != whole.argmax() or diff > 0.02 * spread:
            raise ValueError(
                f"the model does not decode rows in place (logits off by {diff:.3f} of "
                f"{spread:.1f}): is its attention GroupQueryAttention?"
            )
        self._drop()

    # -- the scheduler's view: one unit whose step decodes its most urgent rows ----------------
    @property
    def done(self) -> bool:
        return not self.rows

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.max_rows

    def reap(self) -> None:
        """Finish halted rows now, whoever's turn it is."""
        for seq in [s for s in self.rows if s.halt.is_set()]:
            seq.finish("halted")

    def step(self) -> None:
        self.reap()
        if not self.rows:
            return
        n = self._due()
        stepped = self.rows[:n]
        # A row with a prediction drafts only when it decodes alone: a pass verifies one row's
        # tokens, and rows batched together already keep the cores busy.
        if n == 1 and stepped[0].drafter is not None and self._speculate(stepped[0]):
            self.last_step = max((s.last_step for s in self.rows), default=self.last_step)
            return
        lens = np.array([s.length for s in stepped], np.int64)
        for i, seq in enumerate(stepped):
            self._ids[i, 0] = seq.next_input
        total = int(lens.max()) + 1
        mask = (np.arange(total)[None, :] <= lens[:, None]).astype(np.int64)
        io = self._binding(n)
        io.bind_cpu_input("input_ids", self._ids[:n])
        io.bind_cpu_input("attention_mask", mask)
        try:
            self._session.run_with_iobinding(io)
            logits = io.get_outputs()[0].numpy()[:, -1]
        except Exception as e:
            for seq in list(self.rows):
                seq.fail(e)
            return
        for seq in stepped:
            seq.length += 1  # first, so a row moved by a removal below copies this step's KV
        self.steps += 1
        self.tokens += n
        for i, seq in enumerate(stepped):
            seq.choose(logits[i])
        self.last_step = max((s.last_step for s in self.rows), default=self.last_step)
        self._reprioritise()

    # -- speculative decoding -------------------------------------------------------------------
    def _speculate(self, seq: BatchedSequence) -> bool:
        """One verifying pass for `seq` (row 0, decoding alone) if its drafter has drafts: the
        newest token and the drafts in one forward pass, keeping those the model would have
        chosen. False: nothing to verify, decode it as usual."""
        assert seq.drafter is not None
        limit = min(VERIFY_TOKENS - 1, seq.max_new - seq.produced - 1)
        if seq.length + VERIFY_TOKENS > self.capacity:
            limit = 0
        drafts = seq.drafter.propose(limit)
        if not drafts or (session := self._verify_session()) is None:
            return False
        ids = [seq.next_input, *drafts]
        ids += [drafts[-1]] * (VERIFY_TOKENS - len(ids))  # padding: written past the length
        io = self._verify_binding(session)
        io.bind_cpu_input("input_ids", np.array([ids], np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, seq.length + VERIFY_TOKENS), np.int64))
        io.bind_cpu_input(LOGITS_FROM, np.array([-VERIFY_TOKENS], np.int64))
        try:
            session.run_with_iobinding(io)
            logits = io.get_outputs()[0].numpy()[0]
        except Exception as e:
            seq.fail(e)
            return True
        self.steps += 1
        self.drafted += 1
        self.tokens += seq.verified(logits, drafts)
        return True

    def want_verifier(self) -> None:
        """Build the verifying session in the background (once; ~1 s and a third copy of the
        weights while the batch lives): rows with a prediction decode as usual meanwhile."""
        if self._verifier is None and self._verifier_thread is None:
            self._verifier_thread = threading.Thread(
                target=self.prepare_verifier, name="ingot-verifier-load", daemon=True
            )
            self._verifier_thread.start()

    def prepare_verifier(self) -> None:
        try:
            import onnxruntime as ort

            built = verify_model(self._folder, self._filename, VERIFY_TOKENS)
            if built is None:
                self._verifier = False
                return
            so = ort.SessionOptions()
            so.intra_op_num_threads = self._threads
            so.log_severity_level = 3
            # The rewritten graph is passed as bytes; its weights stay in the model's folder.
            so.add_session_config_entry(
                "session.model_external_initializers_file_folder_path", str(self._folder)
            )
            session = ort.InferenceSession(built[0], so, providers=["CPUExecutionProvider"])
            self._aliases = built[1]
            self._verifier = session  # last: the scheduler thread uses it once it is set
        except Exception as e:  # an older onnxruntime, an unexpected graph: no drafting
            print(f"ingot worker: no speculative decoding for this model: {e}", file=sys.stderr)
            self._verifier = False

    def _verify_session(self) -> Any:
        return self._verifier or None

    def _verify_binding(self, session: Any) -> Any:
        """Row 0's KV bound to past, present and every per-token attention output (see
        onnx_speculative), once per KV buffer set."""
        if self._vio is None:
            io = session.io_binding()
            io.bind_output(self._logits, "cpu")
            by_past = {past: buf[0:1] for (past, _), buf in zip(self._names, self._kv, strict=True)}
            for past, view in by_past.items():
                io.bind_input(past, "cpu", 0, np.float32, list(view.shape), view.ctypes.data)
            for out, past in self._aliases.items():
                view = by_past[past]
                io.bind_output(out, "cpu", 0, np.float32, list(view.shape), view.ctypes.data)
            self._vio = io
        return self._vio

    # -- rows ----------------------------------------------------------------------------------
    def add(self, seq: BatchedSequence) -> None:
        """Prefill a new sequence alone into the next free row and pick its first token. The
        prefix it shares with a row already here (the same system prompt, eight requests for
        the same completion) is copied from that row's cache instead of computed again."""
        self.used = time.monotonic()
        self._ensure(len(self.rows) + 1, len(seq.prompt) + seq.max_new + seq.spare)
        row = len(self.rows)
        source, shared = self._shared_prefix(seq.prompt)
        if shared:
            for buf in self._kv:
                buf[row, :, :shared] = buf[source, :, :shared]
            logits = self._run_row(row, seq.prompt[shared:], len(seq.prompt))
            seq.cached = shared
        else:
            logits = self._prefill(row, seq.prompt)
        self._join(seq, len(seq.prompt))
        seq.choose(logits)

    def _shared_prefix(self, prompt: list[int]) -> tuple[int, int]:
        """(row, length) of the longest prompt prefix a row's cache already holds. Only its
        prompt's positions count (prefilled, so they round as a prefill of this prompt would:
        decoded positions round differently), and at least two tokens are left to run, as
        with the worker's kept generator."""
        shared = [common_prefix(row.prompt, prompt, len(prompt) - 2) for row in self.rows]
        best = max(range(len(shared)), key=shared.__getitem__, default=0)
        return best, shared[best] if shared else 0

    def _join(self, seq: BatchedSequence, length: int) -> None:
        """`seq` becomes the last row, whose cache already holds `length` positions."""
        seq.batch, seq.length = self, length
        seq.configure(self.search)
        self.rows.append(seq)
        self._reprioritise()

    def _ensure(self, rows: int, length: int) -> None:
        """KV buffers with room for `rows` rows of `length` tokens, keeping the rows' caches."""
        if rows <= self._rows_cap and length <= self.capacity:
            return
        new_rows = min(self.max_rows, max(rows, 2 * self._rows_cap))
        # Whole 512-token blocks, so a slightly longer request does not reallocate every time.
        new_cap = min(self.context, -(-max(length, self.capacity) // 512) * 512)
        heads, size = self._heads
        n, used = len(self.rows), max((s.length for s in self.rows), default=0)
        grown = []
        for i in range(len(self._names)):
            buf = np.zeros((new_rows, heads, new_cap, size), np.float32)
            if self._kv and n:
                buf[:n, :, :used] = self._kv[i][:n, :, :used]
            grown.append(buf)
        self._kv = grown
        self._rows_cap, self.capacity = new_rows, new_cap
        self._io = self._vio = None  # bound to the old buffers

    def _drop(self) -> None:
        self._kv, self._rows_cap, self.capacity, self._io, self._vio = [], 0, 0, None, None

    def close(self) -> None:
        """Let go of the session (its weights) and the buffers."""
        self._drop()
        self._session = self._verifier = None

    def adopt(self, single: GenaiSequence) -> BatchedSequence | None:
        """Take over a running single sequence with its KV cache (copied from its generator),
        so the model never alternates between the two sessions: each has its own spinning
        thread pool, and taking turns slowed both 1.5-2x on two cores (measured)."""
        if self.full:
            return None
        got = single.handover([present for _, present in self._names])
        if got is None:
            return None
        tokens, kv = got
        seq = BatchedSequence.moved_from(single, tokens)
        self._ensure(len(self.rows) + 1, len(seq.prompt) + seq.max_new + seq.spare)
        row, cached = len(self.rows), len(tokens) - 1  # all but the newest token
        for buf, src in zip(self._kv, kv, strict=True):
            buf[row, :, :cached] = np.asarray(src)[0, :, :cached]
        self._join(seq, cached)
        return seq

    def _prefill(self, row: int, tokens: list[int]) -> np.ndarray:
        return self._run_row(row, tokens, len(tokens))

    def _run_row(self, row: int, tokens: list[int], total: int) -> np.ndarray:
        """Run `tokens` through one row alone (its cache then holds `total` positions); the
        last position's logits."""
        io = self._session.io_binding()
        io.bind_output(self._logits, "cpu")
        io.bind_cpu_input("input_ids", np.array([tokens], np.int64))
        io.bind_cpu_input("attention_mask", np.ones((1, total), np.int64))
        self._bind_kv(io, row, row + 1)
        self._session.run_with_iobinding(io)
        return np.asarray(io.get_outputs()[0].numpy()[0, -1])

    def remove(self, seq: BatchedSequence) -> None:
        """Drop a finished row; the last row moves into its place (its valid prefix copied)."""
        row = self.rows.index(seq)
        last = len(self.rows) - 1
        if row != last:
            moved = self.rows[last]
            keep = moved.length
            for buf in self._kv:
                buf[row, :, :keep] = buf[last, :, :keep]
            self.rows[row] = moved
        self.rows.pop()
        self._reprioritise()
        if not self.rows:
            self._drop()  # an idle model holds no batch memory

    def _due(self) -> int:
        """How many leading rows this step decodes: the most urgent class (rows are kept sorted
        by class), or every row once any has waited AGING_S. So an inline completion that
        joins a batch of chats decodes alone, as it would on the model by itself, and the
        chats carry on as soon as it is done."""
        first = self.rows[0].priority
        urgent = sum(1 for s in self.rows if s.priority == first)
        if urgent < len(self.rows):
            now = time.monotonic()
            if any(now - s.last_step > AGING_S for s in self.rows[urgent:]):
                return len(self.rows)
        return urgent

    def _reprioritise(self) -> None:
        """Sort the rows by class (most urgent first) by swapping rows' KV caches, which only
        happens when a row arrives or leaves."""
        rows = self.rows
        for i in range(len(rows)):
            j = min(range(i, len(rows)), key=lambda k: (rows[k].priority, k))
            if rows[j].priority < rows[i].priority:
                self._swap(i, j)
        self.priority = rows[0].priority if rows else 0

    def _swap(self, a: int, b: int) -> None:
        ra, rb = self.rows[a], self.rows[b]
        la, lb = ra.length, rb.length
        for buf in self._kv:
            held = buf[a, :, :la].copy()
            buf[a, :, :lb] = buf[b, :, :lb]
            buf[b, :, :la] = held
        self.rows[a], self.rows[b] = rb, ra

    def _binding(self, n: int) -> Any:
        """The decode binding over rows [0, n): KV views bound once per row count, since
        binding 60 buffers every step would cost more than the step's own bookkeeping."""
        if self._io is None or self._bound_rows != n:
            self._io = self._session.io_binding()
            # Logits first: outputs come back in the order they were bound.
            self._io.bind_output(self._logits, "cpu")
            self._bind_kv(self._io, 0, n)
            self._bound_rows = n
        return self._io

    def _bind_kv(self, io: Any, start: int, stop: int) -> None:
        # Past and present bound to the same memory: GroupQueryAttention then appends in place.
        for (past, present), buf in zip(self._names, self._kv, strict=True):
            view = buf[start:stop]
            ptr = view.ctypes.data
            io.bind_input(past, "cpu", 0, np.float32, list(view.shape), ptr)
            io.bind_output(present, "cpu", 0, np.float32, list(view.shape), ptr)


class BatchedSequence(Sequence):
    """A sequence decoded as one row of a DecodeBatch; it samples its own next token."""

    def __init__(
        self, session: OnnxSession, job: dict[str, Any], halt: threading.Event, emit: Emit
    ) -> None:
        super().__init__(session, job, halt, emit)
        self._as_row(job, self.prompt)

    def _as_row(self, job: dict[str, Any], seen: list[int]) -> None:
        self.batch: DecodeBatch | None = None
        self.length = 0
        self.next_input = seen[-1] if seen else 0
        self._params = job.get("params") or {}
        self._opts: dict[str, Any] = {}
        self._seen: set[int] = set(seen)
        self._prediction = self._params.get("prediction") or None
        self.spare = VERIFY_TOKENS if self._prediction else 0  # KV room a verifying pass writes

    @classmethod
    def moved_from(cls, single: GenaiSequence, tokens: list[int]) -> BatchedSequence:
        """The row that carries on `single` (after its handover): the same id, halt, counts,
        pending text and detokeniser; `tokens` are its prompt and output so far."""
        seq = cls.__new__(cls)
        seq.__dict__.update(single.__dict__)
        seq.done = False
        seq._as_row(single.job, tokens)
        return seq

    def configure(self, search_defaults: dict[str, Any]) -> None:
        """Sampling as ORT GenAI would do it for these params: its search options, with the
        model's genai_config `search` section filling what the request left out."""
        opts = search_options(self._params, len(self.prompt) + self.max_new)
        self._opts = {
            "greedy": not opts["do_sample"],
            "temperature": float(opts.get("temperature", search_defaults.get("temperature", 1.0))),
            "top_k": int(opts.get("top_k", search_defaults.get("top_k", 0)) or 0),
            "top_p": float(opts.get("top_p", search_defaults.get("top_p", 1.0))),
            "repetition_penalty": float(
                opts.get("repetition_penalty", search_defaults.get("repetition_penalty", 1.0))
            ),
        }
        self._rng = np.random.default_rng()
        # Sampled requests ignore the prediction: a draft accepted when it equals a sample
        # would skew the distribution, and speculative sampling is not implemented.
        if self._prediction and self._opts["greedy"] and self.drafter is None:
            try:
                source = [int(t) for t in self._session.tokenizer.encode(self._prediction)]
            except Exception:
                source = []
            self.drafter = Drafter(source, VERIFY_TOKENS - 1) if source else None

    def step(self) -> None:
        raise RuntimeError("a batched sequence is stepped by its DecodeBatch")

    def choose(self, logits: np.ndarray) -> None:
        try:
            tok = sample(logits, self._opts, self._rng, self._seen)
        except Exception as e:
            self.fail(e)
            return
        self._seen.add(tok)
        self.next_input = tok
        self.accept(tok)  # max_new already stops it inside the context
        if self.drafter is not None:
            self.drafter.update([], [tok])

    def verified(self, logits: np.ndarray, drafts: list[int]) -> int:
        """Take a verifying pass's tokens (logits[i]: after the newest token and i drafts): the
        model's choice at each position, going on while it equals the draft there, as decoding
        one token at a time would have. Returns how many tokens it gave."""
        produced: list[int] = []
        for i in range(len(drafts) + 1):
            try:
                tok = sample(logits[i], self._opts, self._rng, self._seen)
            except Exception as e:
                self.fail(e)
                return len(produced)
            self._seen.add(tok)
            self.next_input = tok
            self.length += 1  # the input at position i is now part of the sequence
            produced.append(tok)
            self.accept(tok)
            if self.done or i == len(drafts) or tok != drafts[i]:
                break
        if self.drafter is not None:
            # A sequence that ended inside the pass (end of text, max tokens) never needed the
            # drafts after its last token.
            self.drafter.update(drafts[: len(produced)] if self.done else drafts, produced)
        return len(produced)

    def _release(self, reusable: bool) -> None:
        if self.batch is not None:
            self.batch.remove(self)
            self.batch = None


def sample(logits: np.ndarray, o: dict[str, Any], rng: np.random.Generator, seen: set[int]) -> int:
    """The next token from one row's logits: repetition penalty (as ORT GenAI applies it, over
    prompt and output tokens), then greedy, or temperature, top-k and top-p sampling."""
    penalty = o["repetition_penalty"]
    if o["greedy"] and (penalty == 1.0 or not seen):
        return int(logits.argmax())  # the common case: no copy of the vocabulary's logits
    x = logits.astype(np.float32, copy=True)
    if penalty != 1.0 and seen:
        idx = np.fromiter(seen, np.int64)
        vals = x[idx]
        x[idx] = np.where(vals > 0, vals / penalty, vals * penalty)
    if o["greedy"]:
        return int(x.argmax())
    x /= max(o["temperature"], 1e-6)
    k = o["top_k"]
    cand = np.argpartition(x, -k)[-k:] if 0 < k < x.size else np.arange(x.size)
    cand = cand[np.argsort(-x[cand])]
    p = np.exp(x[cand] - x[cand[0]])
    p /= p.sum()
    if o["top_p"] < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), o["top_p"])) + 1
        cand, p = cand[:keep], p[:keep] / p[:keep].sum()
    return int(cand[rng.choice(cand.size, p=p)])

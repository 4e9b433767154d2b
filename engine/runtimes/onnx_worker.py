"""The model worker process: one ONNX Runtime GenAI model, driven by JSON lines on stdin/stdout.

onnxruntime-genai 0.18's Python binding holds the GIL for a whole prefill and for every decode
step (measured here: a 400-token prefill stalled every other thread for 0.5 s). A token loop in
the engine's process would freeze its event loop, and with it status requests, other streams and
cancellations. So each loaded model lives in a process of its own; unloading it ends the process,
which also gives every byte of the model's memory back.

Wire (one JSON object per line). Engine -> worker: `{"op": "load"|"count"|"render"|"generate"|
"halt", "id": N, ...}`. Worker -> engine: `{"id": N, "result": ...}` or `{"id": N, "error": msg}`
for calls; `{"id": N, "texts": [one per token], "n": tokens}` batches (see onnx_session.FLUSH_S) then one
`{"id": N, "stats": {...}}` for a
generation. Run as `python -m engine.runtimes.onnx_worker`; it exits when stdin closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

from engine.runtimes.onnx_batch import BatchedSequence, DecodeBatch, batchable_folder
from engine.runtimes.onnx_session import (
    AGING_S,
    GenaiSequence,
    OnnxSession,
    Sequence,
    reuse_key,
    search_options,
)
from engine.runtimes.worker_stdio import serve_stdio
from engine.scheduler import PRIORITY_CHAT, PRIORITY_INTERACTIVE


def _batch_idle_s() -> float:
    """Seconds without overlapping requests after which a worker drops its batching session
    (and the second copy of the weights it holds); INGOT_BATCH_IDLE_S overrides."""
    try:
        return max(1.0, float(os.environ.get("INGOT_BATCH_IDLE_S", "120")))
    except ValueError:
        return 120.0


BATCH_IDLE_S = _batch_idle_s()
# The longest a request waits for the batching session being built (~0.3 s for the default
# model; a larger model's can take longer): after that it starts on its own.
WAIT_FOR_BATCH_S = 2.0


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and each rebuild of a
    batching session would then grow the worker's RSS)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Unit(Protocol):
    """What the scheduler steps: a sequence, or the DecodeBatch (all its rows at once)."""

    priority: int
    last_step: float

    def step(self) -> None: ...


U = TypeVar("U", bound=Unit)


def pick(live: list[U], now: float) -> U:
    """The sequence to step next (see Worker._run_jobs)."""
    starving = [seq for seq in live if now - seq.last_step > AGING_S]
    if starving:
        return min(starving, key=lambda seq: seq.last_step)
    return min(live, key=lambda seq: (seq.priority, seq.last_step))


def _not_interactive(job: dict[str, Any]) -> bool:
    """Inline completions and edits never wait for the batching session: they start at once
    and go first."""
    return int(job.get("priority", PRIORITY_CHAT)) > PRIORITY_INTERACTIVE


class Worker:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self._session: OnnxSession | None = None
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._halts: dict[int, threading.Event] = {}
        self._runner = threading.Thread(target=self._run_jobs, name="ingot-token-loop", daemon=True)
        self._batch: DecodeBatch | None = None
        self._batch_cfg: tuple[Path, dict[str, Any]] | None = None
        self._batch_loader: threading.Thread | None = None
        self._threads = 1
        self._rows = 1

    def send(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
        with self._write_lock:
            self._out.write(line + "\n")
            self._out.flush()

    def _next_jobs(self, wait: bool, poll_s: float | None = None) -> list[dict[str, Any]] | None:
        """Every job that has arrived (waiting for one if asked, at most `poll_s` if given);
        None when told to stop."""
        jobs: list[dict[str, Any]] = []
        # An idle worker holding a batching session or kept generators wakes now and then to
        # see if it can let go. (Or is being given a session: its build may finish meanwhile.)
        holds = self._batch is not None or self._batch_loader is not None
        holds = holds or (self._session is not None and self._session.prompt_cache.held)
        timeout = poll_s if poll_s is not None else BATCH_IDLE_S / 4 if wait and holds else None
        try:
            item = self._jobs.get(block=wait, timeout=timeout)
            while True:
                if item is None:
                    return None
                jobs.append(item)
                item = self._jobs.get_nowait()
        except queue.Empty:
            return jobs

    def _run_jobs(self) -> None:
        try:
            self._schedule()
        except BaseException:
            # A token loop that died leaves a process that answers nothing: end it, so the
            # engine sees the exit, fails what was waiting and loads the model again.
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)

    def _schedule(self) -> None:
        """Admit new requests, then step one unit: the most urgent class first (interactive
        before chat before batch), round-robin within a class, and anything left unstepped for
        AGING_S goes next, so a completion typed during a long chat answers at once and nothing
        starves. A unit is one sequence with its own generator, or the DecodeBatch, whose step
        gives every row a token: requests that arrive while others run are batched."""
        assert self._session is not None
        singles: list[Sequence] = []
        movable: list[GenaiSequence] = []  # singles that may become batch rows
        # Batchable chat and batch-class jobs that came while the batching session was being
        # built, beside two or more already running: they wait the ~0.3 s it takes and then join
        # it as rows (copying a prefix they share), rather than each prefilling alone and
        # taking turns.
        waiting: list[dict[str, Any]] = []
        waiting_since = 0.0
        admitted: set[int] = set()
        while (
            jobs := self._next_jobs(
                wait=not singles and self._batch_rows() == 0,
                poll_s=0.01 if waiting and not singles and self._batch_rows() == 0 else None,
            )
        ) is not None:
            # Those that waited go before the new jobs (into the batch, or alone if it is full).
            ready, waiting = self._done_waiting(waiting, waiting_since)
            for job in ready:
                if self._speculative(job) and self._batch is not None:
                    self._batch.want_verifier()
                if not self._admit_batched(job):
                    self._start_single(job, singles, movable)
            for job in jobs:
                admitted.add(int(job["id"]))
                busy = len(jobs) > 1 or bool(singles or waiting) or self._batch_rows() > 0
                batchable = self._batchable(job)
                if self._speculative(job):
                    # Only the batching session can verify drafts: a request with a prediction
                    # becomes a row even alone, waiting for the session if it is being built.
                    if self._admit_batched(job):
                        if self._batch is not None:
                            self._batch.want_verifier()
                        continue
                    if self._batch_building():
                        if not waiting:
                            waiting_since = time.monotonic()
                        waiting.append(job)
                        continue
                if busy and batchable and self._admit_batched(job):
                    continue
                # A second request starts at once too (then moves in): waiting would delay it by
                # the build, and alone beside one other it gains little. From the third on,
                # waiting beats prefilling alone and taking turns.
                crowd = len(singles) + len(waiting) >= 2
                if crowd and batchable and self._batch_building() and _not_interactive(job):
                    if not waiting:
                        waiting_since = time.monotonic()
                    waiting.append(job)
                    continue
                self._start_single(job, singles, movable if batchable else None)
            # Singles move into the batch when a row runs there, or when several are running
            # once it is ready (a burst that came before it was built); one alone stays put.
            # (Pruned every turn: with no batch, e.g. a model that cannot batch, finished
            # singles would pile up here.)
            movable = [seq for seq in movable if not seq.done]
            batch = self._batch
            if movable and batch is not None and (batch.rows or len(movable) > 1):
                movable = self._move_into_batch(movable)
            self._release_idle()
            for seq in singles:
                if seq.halt.is_set():
                    seq.step()  # reports it halted now, whoever's turn it is
            units: list[Sequence | DecodeBatch] = [seq for seq in singles if not seq.done]
            if self._batch is not None:
                self._batch.reap()
                if not self._batch.done:
                    units.append(self._batch)
            if units:
                pick(units, time.monotonic()).step()
            singles = [seq for seq in singles if not seq.done]
            live = {seq.rid for seq in singles}
            live.update(seq.rid for seq in (self._batch.rows if self._batch else []))
            live.update(int(job["id"]) for job in waiting)
            for rid in admitted - live:
                self._halts.pop(rid, None)
            admitted &= live

    def _move_into_batch(self, movable: list[GenaiSequence]) -> list[GenaiSequence]:
        """Batchable singles become rows (their KV copied over), so only sequences that must
        have their own generator still take turns with the batch; a moved single is done, so
        it drops out of `singles`. Returns those still to move (e.g. not started yet)."""
        assert self._batch is not None
        batch = self._batch
        return [
            seq
            for seq in movable
            if not seq.done and (seq.halt.is_set() or batch.adopt(seq) is None)
        ]

    @staticmethod
    def _batchable(job: dict[str, Any]) -> bool:
        """Constrained and seeded sampled requests always get their own generator: guidance
        lives in ORT GenAI, and a seed must give the same text however busy the model is
        (greedy decoding gives the same text either way). The rule is the prompt cache's."""
        return reuse_key(job) is not None

    def _speculative(self, job: dict[str, Any]) -> bool:
        """A greedy request with a prediction on a model this worker can batch: its drafts are
        verified by the batching session (onnx_speculative). Sampled and constrained requests
        ignore the prediction."""
        params = job.get("params") or {}
        if not params.get("prediction") or self._batch_cfg is None or not self._batchable(job):
            return False
        return not search_options(params, 0)["do_sample"]

    def _release_idle(self) -> None:
        """Give the batching session's memory back (a second copy of the weights) once no
        requests have overlapped for BATCH_IDLE_S, and the kept generators' KV caches once no
        request has come for as long; the next overlap builds the batch again."""
        assert self._session is not None
        cache, batch, now = self._session.prompt_cache, self._batch, time.monotonic()
        idle_cache = cache.held and now - cache.kept_at > BATCH_IDLE_S
        idle_batch = batch is not None and not batch.rows and now - batch.used > BATCH_IDLE_S
        if not (idle_cache or idle_batch):
            return
        if idle_cache:
            cache.drop()
        if idle_batch and batch is not None:
            batch.close()
        gc.collect()
        _trim_heap()
        if idle_batch:
            self._batch = None  # last: `batching_ready` reads 0 once the memory is back
            self._batch_loader = None

    def _start_single(
        self, job: dict[str, Any], singles: list[Sequence], movable: list[GenaiSequence] | None
    ) -> None:
        """Start `job` on a generator of its own (prefilled now); `movable`: it may become a
        batch row later."""
        assert self._session is not None
        single = self._session.start(job, self._halts[int(job["id"])], self.send)
        singles.append(single)
        if movable is not None:
            movable.append(single)

    def _done_waiting(
        self, waiting: list[dict[str, Any]], since: float
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(jobs to admit now, jobs still waiting for the batching session): all of them once
        it is ready, could not be built or has taken WAIT_FOR_BATCH_S; a cancelled one at once
        (it reports halted without prefilling)."""
        if not waiting:
            return [], []
        if not self._batch_building() or time.monotonic() - since > WAIT_FOR_BATCH_S:
            return waiting, []
        ready: list[dict[str, Any]] = []
        still: list[dict[str, Any]] = []
        for job in waiting:
            (ready if self._halts[int(job["id"])].is_set() else still).append(job)
        return ready, still

    def _batch_building(self) -> bool:
        """A batching session is on its way (its build started and has not failed)."""
        loader = self._batch_loader
        # (A build thread that ended without a session or an error is not coming back.)
        building = loader is not None and loader.is_alive() and self._batch_cfg is not None
        return self._batch is None and building

    def _batch_rows(self) -> int:
        return len(self._batch.rows) if self._batch is not None else 0

    def _admit_batched(self, job: dict[str, Any]) -> bool:
        """Start `job` as a row of the DecodeBatch if there is one with room (batchable jobs
        that arrive while something runs; alone, a sequence of its own decodes a little
        faster). False: it runs as a single for now (the first overlap builds the batch)."""
        if self._batch is None:
            self._start_batch()
            return False
        if self._batch.full:
            return False
        assert self._session is not None
        seq = BatchedSequence(self._session, job, self._halts[int(job["id"])], self.send)
        if seq.done:
            return True  # failed to tokenize: already reported
        if seq.halt.is_set():
            seq.finish("halted")
            return True
        try:
            self._batch.add(seq)
        except Exception as e:
            seq.fail(e)
        return True

    def _start_batch(self) -> None:
        """Build the DecodeBatch in the background the first time requests overlap; until it
        is ready they take turns as single sequences. A model it cannot batch stays that way."""
        if self._batch_loader is not None or self._batch_cfg is None:
            return
        folder, cfg = self._batch_cfg

        def build() -> None:
            try:
                self._batch = DecodeBatch(folder, cfg, self._threads, self._rows)
            except Exception as e:
                print(f"ingot worker: no batching for this model: {e}", file=sys.stderr)
                self._batch_cfg = None

        self._batch_loader = threading.Thread(target=build, name="ingot-batch-load", daemon=True)
        self._batch_loader.start()

    def handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), int(msg.get("id", 0))
        if op == "halt":
            if (event := self._halts.get(rid)) is not None:
                event.set()
            return
        try:
            if op == "load":
                folder, device = Path(msg["folder"]), str(msg["device"])
                self._threads = int(msg["threads"])
                self._rows = int(msg.get("rows", 1))
                self._session = OnnxSession(folder, device, self._threads)
                if device == "cpu" and self._rows > 1 and (cfg := batchable_folder(folder)):
                    self._batch_cfg = (folder, cfg)
                self._runner.start()
                self.send({"id": rid, "result": {"contextLength": self._session.context_length}})
                return
            if self._session is None:
                raise RuntimeError("no model is loaded in this worker")
            if op == "metrics":
                self.send({"id": rid, "result": self.metrics()})
            elif op == "count":
                self.send({"id": rid, "result": self._session.count(msg["text"])})
            elif op == "render":
                self.send({"id": rid, "result": self._session.render_chat(msg["messages"])})
            elif op == "generate":
                self._halts[rid] = threading.Event()
                self._jobs.put(msg)
            else:
                raise RuntimeError(f"unknown op {op!r}")
        except Exception as e:
            self.send({"id": rid, "error": f"{type(e).__name__}: {e}"})

    def metrics(self) -> dict[str, float]:
        """Counters for status and /metrics (read without a lock: a torn read is one step old)."""
        batch = self._batch
        cache = self._session.prompt_cache if self._session is not None else None
        return {
            "prompt_cache_hits": float(cache.hits if cache else 0),
            "prompt_cache_tokens": float(cache.reused_tokens if cache else 0),
            "batching_ready": float(batch is not None),
            "batched_rows": float(len(batch.rows) if batch else 0),
            "batch_steps": float(batch.steps if batch else 0),
            "batched_tokens": float(batch.tokens if batch else 0),
            "verify_passes": float(batch.drafted if batch else 0),
        }

    def close(self) -> None:
        for event in list(self._halts.values()):
            event.set()
        self._jobs.put(None)


def main() -> None:
    serve_stdio(Worker)


if __name__ == "__main__":
    main()

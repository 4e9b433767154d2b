"""The model worker process: one ONNX Runtime GenAI model, driven by JSON lines on stdin/stdout.

onnxruntime-genai 0.18's Python binding holds the GIL for a whole prefill and for every decode
step (measured here: a 400-token prefill stalled every other thread for 0.5 s). A token loop in
the engine's process would freeze its event loop, and with it status requests, other streams and
cancellations. So each loaded model lives in a process of its own; unloading it ends the process,
which also gives every byte of the model's memory back.

Wire (one JSON object per line). Engine -> worker: `{"op": "load"|"count"|"render"|"generate"|
"halt", "id": N, ...}`. Worker -> engine: `{"id": N, "result": ...}` or `{"id": N, "error": msg}`
for calls; `{"id": N, "text": ..., "n": tokens}` events then one `{"id": N, "stats": {...}}` for a
generation. Run as `python -m engine.runtimes.onnx_worker`; it exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from engine.runtimes.onnx_session import OnnxSession, Sequence

# Seconds a sequence may wait for a turn before it goes next whatever its class.
AGING_S = 2.0


def pick(live: list[Sequence], now: float) -> Sequence:
    """The sequence to step next (see Worker._run_jobs)."""
    starving = [seq for seq in live if now - seq.last_step > AGING_S]
    if starving:
        return min(starving, key=lambda seq: seq.last_step)
    return min(live, key=lambda seq: (seq.priority, seq.last_step))


class Worker:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._write_lock = threading.Lock()
        self._session: OnnxSession | None = None
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._halts: dict[int, threading.Event] = {}
        self._runner = threading.Thread(target=self._run_jobs, name="ingot-token-loop", daemon=True)

    def send(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
        with self._write_lock:
            self._out.write(line + "\n")
            self._out.flush()

    def _next_jobs(self, wait: bool) -> list[dict[str, Any]] | None:
        """Every job that has arrived (waiting for one if asked); None when told to stop."""
        jobs: list[dict[str, Any]] = []
        try:
            item = self._jobs.get(block=wait)
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
        """Admit new requests, then step one sequence a token: the most urgent class first
        (interactive before chat before batch), round-robin within a class, and anything left
        unstepped for AGING_S goes next, so a completion typed during a long chat answers at
        once and nothing starves."""
        assert self._session is not None
        active: list[Sequence] = []
        while (jobs := self._next_jobs(wait=not active)) is not None:
            for job in jobs:
                rid = int(job["id"])
                active.append(self._session.start(job, self._halts[rid], self.send))
            for seq in active:
                if seq.halt.is_set():
                    seq.step()  # reports it halted now, whoever's turn it is
            live = [seq for seq in active if not seq.done]
            if live:
                pick(live, time.monotonic()).step()
            for seq in active:
                if seq.done:
                    self._halts.pop(seq.rid, None)
            active = [seq for seq in active if not seq.done]

    def handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), int(msg.get("id", 0))
        if op == "halt":
            if (event := self._halts.get(rid)) is not None:
                event.set()
            return
        try:
            if op == "load":
                self._session = OnnxSession(
                    Path(msg["folder"]), str(msg["device"]), int(msg["threads"])
                )
                self._runner.start()
                self.send({"id": rid, "result": {"contextLength": self._session.context_length}})
                return
            if self._session is None:
                raise RuntimeError("no model is loaded in this worker")
            if op == "count":
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

    def close(self) -> None:
        for event in list(self._halts.values()):
            event.set()
        self._jobs.put(None)


def main() -> None:
    # The wire is a private copy of stdout; fd 1 itself then points at stderr, so a stray print
    # or a native library writing to stdout can never corrupt the protocol.
    wire = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = Worker(wire)
    for line in sys.stdin:
        if line.strip():
            worker.handle(json.loads(line))
    # The engine closed the pipe (unload, or the engine died): stop at once. os._exit skips
    # interpreter teardown, which could wait on a token loop still inside the runtime.
    worker.close()
    wire.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

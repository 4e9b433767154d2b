"""The embedding worker process: one ONNX sentence encoder, driven by JSON lines on stdin/stdout.

It lives in a process of its own for the same reasons as onnx_worker: a batch holds the CPU for
a while and the model's memory goes back to the OS with the process. Wire, engine -> worker:
`{"op": "load", "id", "folder", "threads"}`, `{"op": "count", "id", "text"}`,
`{"op": "embed", "id", "texts" | "tokens", "truncate"}`, `{"op": "halt", "id"}`. Worker ->
engine: `{"id", "result"}` or `{"id", "error"}`. An embed result is `{"vectors": [base64 of
float32 little-endian], "tokens": [per input]}`, or `{"tooLong": {"index", "tokens"}}` /
`{"badToken": {"index", "token"}}` for an input the model cannot take. Run as
`python -m engine.runtimes.embedding_worker`; it exits when stdin closes.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import traceback
from pathlib import Path
from typing import Any, TextIO

from engine.runtimes.embedding_encoder import BadToken, Encoder, Halted, TooLong
from engine.runtimes.worker_stdio import serve_stdio


class EmbeddingWorker:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._encoder: Encoder | None = None
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._halts: dict[int, threading.Event] = {}
        self._runner = threading.Thread(target=self._run, name="ingot-embed", daemon=True)

    def send(self, msg: dict[str, Any]) -> None:
        line = json.dumps(msg, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()

    def handle(self, msg: dict[str, Any]) -> None:
        op, rid = msg.get("op"), int(msg.get("id", 0))
        if op == "halt":
            if (event := self._halts.get(rid)) is not None:
                event.set()
            return
        try:
            if op == "load":
                self._encoder = Encoder(Path(msg["folder"]), int(msg["threads"]))
                self._runner.start()
                cfg = self._encoder.config
                result = {
                    "contextLength": cfg.max_tokens,
                    "dimensions": cfg.dimensions,
                    "vocabSize": self._encoder.vocab_size,
                }
                self.send({"id": rid, "result": result})
                return
            if self._encoder is None:
                raise RuntimeError("no model is loaded in this worker")
            if op == "count":
                rows = self._encoder.tokenize([str(msg["text"])], truncate=False)
                self.send({"id": rid, "result": len(rows[0])})
            elif op == "embed":
                self._halts[rid] = threading.Event()
                self._jobs.put(msg)
            else:
                raise RuntimeError(f"unknown op {op!r}")
        except Exception as e:
            self.send({"id": rid, "error": f"{type(e).__name__}: {e}"})

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            rid = int(job["id"])
            try:
                self.send({"id": rid, "result": self.embed(job, self._halts[rid])})
            except Halted:
                self.send({"id": rid, "error": "Halted: the request was cancelled"})
            except Exception as e:
                traceback.print_exc()
                self.send({"id": rid, "error": f"{type(e).__name__}: {e}"})
            finally:
                self._halts.pop(rid, None)

    def embed(self, job: dict[str, Any], halt: threading.Event) -> dict[str, Any]:
        encoder = self._encoder
        assert encoder is not None
        truncate = bool(job.get("truncate"))
        if job.get("texts") is not None:
            rows = encoder.tokenize([str(t) for t in job["texts"]], truncate=truncate)
        else:
            rows = [[int(t) for t in row] for row in job["tokens"]]
            if truncate:
                rows = [row[: encoder.config.max_tokens] for row in rows]
        problem = encoder.check(rows, truncate=truncate)
        if isinstance(problem, TooLong):
            return {"tooLong": {"index": problem.index, "tokens": problem.tokens}}
        if isinstance(problem, BadToken):
            return {"badToken": {"index": problem.index, "token": problem.token}}
        vectors = encoder.encode(rows, halted=halt.is_set)
        little = vectors.astype("<f4")
        return {
            "vectors": [base64.b64encode(row.tobytes()).decode("ascii") for row in little],
            "tokens": [len(r) for r in rows],
        }

    def close(self) -> None:
        for event in list(self._halts.values()):
            event.set()
        self._jobs.put(None)


def main() -> None:
    serve_stdio(EmbeddingWorker)


if __name__ == "__main__":
    main()

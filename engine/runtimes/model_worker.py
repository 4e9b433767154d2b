"""Starting a loaded model's own worker process: its environment, the load call, and its memory."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from engine.errors import LoadFailed
from engine.progress import Progress, ProgressCallback
from engine.runtimes.child_process import without_secrets
from engine.runtimes.worker_process import WorkerFailed, WorkerProcess

# The engine package's parent, so `-m engine.runtimes.<worker>` imports this very engine.
_IMPORT_ROOT = str(Path(__file__).resolve().parents[2])


def worker_env() -> dict[str, str]:
    """The engine's environment, less secrets (a worker reads a local folder, offline), with
    this engine importable."""
    env = without_secrets(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_IMPORT_ROOT, env.get("PYTHONPATH")) if p)
    return env


async def start_model_worker(
    argv: Sequence[str],
    *,
    model_id: str,
    folder: Path,
    runtime: str,
    hint: str,
    progress: ProgressCallback,
    **load: Any,
) -> tuple[WorkerProcess, dict[str, Any], int]:
    """Starts a worker, asks it to load the model in `folder`, and measures it: (worker, the load
    answer, RSS bytes). A failed load ends the worker and says what to do (`hint`)."""
    progress(Progress("load", f"Starting a worker for {model_id}", 0.0))
    worker = WorkerProcess(list(argv), env=worker_env(), name=f"{runtime} worker for {model_id}")
    await worker.start()
    try:
        progress(Progress("load", f"Loading {model_id}", 0.1))
        info = await worker.call("load", folder=str(folder), **load)
        assert worker.pid is not None
        memory = psutil.Process(worker.pid).memory_info().rss
    except (WorkerFailed, psutil.Error) as e:
        await worker.close()
        raise LoadFailed(
            f"{runtime} could not load {model_id} from {folder}: {e}", hint=hint
        ) from e
    except BaseException:
        await worker.close()
        raise
    progress(Progress("load", f"Loaded {model_id}", 1.0))
    return worker, dict(info), memory

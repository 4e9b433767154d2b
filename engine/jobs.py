"""ProvisioningJobs: the downloads, builds and checks running in this process — one shared run per
variant that every caller joins, and the variants each operation writes or reads, so that a delete
or a cache move never pulls files from under them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine.errors import Cancelled, ModelBusy
from engine.progress import CancelToken, Progress, ProgressCallback

T = TypeVar("T")
log = logging.getLogger(__name__)

# How often a caller waiting for a shared run looks at its own cancel token (a threading flag,
# set by the JSON-RPC $/cancelRequest or the CLI's Ctrl-C, with nothing to await on).
POLL_S = 0.1

Work = Callable[[ProgressCallback, CancelToken], Coroutine[Any, Any, T]]


class _Run(Generic[T]):
    """One operation in flight, the callers following it, and its last progress report (what a
    caller that joins late is shown first)."""

    def __init__(self, key: str, what: str) -> None:
        self.key = key
        self.what = what
        self.token = CancelToken()
        self.listeners: list[ProgressCallback] = []
        self.last: Progress | None = None
        self.task: asyncio.Task[T] | None = None

    def report(self, p: Progress) -> None:
        self.last = p
        for listener in list(self.listeners):
            try:
                listener(p)
            except Exception:  # one caller's broken stream must not stop the others' progress
                log.exception("a progress listener of %s failed", self.key)


class ProvisioningJobs:
    def __init__(self) -> None:
        # variant id -> what each operation using it is doing ("downloaded", "compiled", …).
        self._holds: dict[str, list[str]] = {}
        self._runs: dict[str, _Run[Any]] = {}
        self._moving_to: Path | None = None

    # -- what is in use ----------------------------------------------------------------------------
    @property
    def moving_to(self) -> Path | None:
        """Where the cache is being moved now, or None."""
        return self._moving_to

    def busy(self, variant_id: str) -> str | None:
        """What is being done to `variant_id` now ("downloaded", "compiled", …), or None."""
        doing = self._holds.get(variant_id)
        return doing[-1] if doing else None

    def in_use(self) -> list[str]:
        return sorted(self._holds)

    @contextlib.contextmanager
    def hold(self, variant_ids: Iterable[str], what: str) -> Iterator[None]:
        """Marks `variant_ids` in use for the duration (refused while the cache moves)."""
        release = self._acquire(variant_ids, what)
        try:
            yield
        finally:
            release()

    def _acquire(self, variant_ids: Iterable[str], what: str) -> Callable[[], None]:
        if self._moving_to is not None:
            raise ModelBusy(
                f"The model cache is being moved to {self._moving_to}.",
                hint="Retry when `ingot cache cd` has finished.",
            )
        ids = list(dict.fromkeys(variant_ids))
        for vid in ids:
            self._holds.setdefault(vid, []).append(what)

        def release() -> None:
            for vid in ids:
                doing = self._holds.get(vid, [])
                with contextlib.suppress(ValueError):
                    doing.remove(what)
                if not doing:
                    self._holds.pop(vid, None)

        return release

    @contextlib.contextmanager
    def moving(self, dest: Path) -> Iterator[None]:
        """Held while the cache moves: refused (ModelBusy) while anything runs, and nothing new
        starts until it is done (it would write into the old cache, or half into each)."""
        if self._holds:
            ids = self.in_use()
            doing = sorted({what for vid in ids for what in self._holds[vid]})
            raise ModelBusy(
                f"{', '.join(ids)} {'is' if len(ids) == 1 else 'are'} being "
                f"{' or '.join(doing)} in the cache.",
                hint="Cancel that or wait for it to finish, then move the cache.",
            )
        if self._moving_to is not None:
            raise ModelBusy(
                f"The model cache is already being moved to {self._moving_to}.",
                hint="Wait for that move to finish.",
            )
        self._moving_to = dest
        try:
            yield
        finally:
            self._moving_to = None

    # -- shared runs -------------------------------------------------------------------------------
    async def join(
        self,
        key: str,
        work: Work[T],
        *,
        progress: ProgressCallback,
        cancel: CancelToken,
        holds: Iterable[str],
        what: str,
    ) -> T:
        """The result of `work` for `key`, started now or joined if it already runs.

        Every caller gets the run's progress (the latest report at once) and its result or error.
        A caller that cancels (its token, or its task) stops following; the run itself is stopped
        only when no caller is left, and that last caller waits for it to stop so that partial
        files are consistent by the time it returns. Joining never starts a second run, so two
        requests for one model cost one download and one worker thread."""
        run: _Run[T] | None = self._runs.get(key)
        if run is None or run.token.cancelled:
            run = self._start(key, work, holds, what)
        elif run.last is not None:
            progress(run.last)
        run.listeners.append(progress)
        return await self._follow(run, progress, cancel)

    def _start(self, key: str, work: Work[T], holds: Iterable[str], what: str) -> _Run[T]:
        release = self._acquire(holds, what)
        run: _Run[T] = _Run(key, what)
        try:
            run.task = asyncio.create_task(work(run.report, run.token), name=f"ingot-{key}")
        except BaseException:
            release()
            raise

        def done(task: asyncio.Task[T]) -> None:
            release()
            if self._runs.get(key) is run:
                del self._runs[key]
            if not task.cancelled():
                task.exception()  # retrieved here; the callers still get it from result()

        run.task.add_done_callback(done)
        self._runs[key] = run
        return run

    async def _follow(self, run: _Run[T], progress: ProgressCallback, cancel: CancelToken) -> T:
        task = run.task
        assert task is not None
        try:
            while not task.done() and not cancel.cancelled:
                await asyncio.wait({task}, timeout=POLL_S)
        except asyncio.CancelledError:
            await self._leave(run, progress, "request cancelled")
            raise
        if task.done():
            self._detach(run, progress)
            return task.result()
        if await self._leave(run, progress, cancel.reason):
            return task.result()  # the run's own outcome: Cancelled, saying what was kept
        raise Cancelled(
            f"Stopped waiting for {run.key} ({cancel.reason}); it is still being {run.what} "
            "for another request that waits for it.",
            model=run.key,
        )

    @staticmethod
    def _detach(run: _Run[Any], progress: ProgressCallback) -> None:
        with contextlib.suppress(ValueError):
            run.listeners.remove(progress)

    async def _leave(self, run: _Run[Any], progress: ProgressCallback, reason: str) -> bool:
        """Stop following `run`; stop the run too if nobody else follows it (True then)."""
        self._detach(run, progress)
        if run.listeners:
            return False
        run.token.cancel(reason)
        if self._runs.get(run.key) is run:
            del self._runs[run.key]  # a caller that comes now starts afresh (and resumes)
        assert run.task is not None
        await asyncio.wait({run.task})
        return True

    async def close(self) -> None:
        """Stop every run (the engine is shutting down) and wait for them to stop."""
        tasks = []
        for run in list(self._runs.values()):
            run.token.cancel("the engine is shutting down")
            if run.task is not None:
                tasks.append(run.task)
        if tasks:
            await asyncio.wait(tasks)

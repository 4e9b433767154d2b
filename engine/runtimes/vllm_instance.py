"""VllmInstance: a loaded vLLM model, served by a child process Ingot started or by a remote URL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import psutil

from engine.catalog.variant import ModelVariant
from engine.errors import GenerationFailed, IngotError, RemoteUnavailable
from engine.generation import (
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    RuntimeStats,
    TextDelta,
)
from engine.runtimes.base import HaltFlag
from engine.runtimes.vllm_client import (
    StreamChunk,
    VllmClient,
    completion_body,
    unreachable_hint,
)
from engine.runtimes.vllm_plan import VllmPlan
from engine.runtimes.vllm_server import VllmServer

log = logging.getLogger(__name__)

# Metrics are read at most this often, however many readers ask.
METRICS_TTL_S = 1.0
FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "cancelled"}
# Put on a generation's queue when its stream was closed because the generation was halted.
_HALTED = StreamChunk("", None, None, "halted")


def tree_rss(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += int(p.memory_info().rss)
    return total


class VllmInstance:
    """A loaded vLLM model: a server Ingot started (`server`), or a remote deployment."""

    def __init__(
        self,
        variant: ModelVariant,
        client: VllmClient,
        *,
        context_length: int,
        device: str,
        plan: VllmPlan | None,
        server: VllmServer | None,
        concurrency: int,
    ) -> None:
        self.variant_id = variant.id
        self.max_output_tokens = variant.max_output_tokens
        self.client = client
        self.context_length = context_length
        self.device = device
        self.plan = plan
        self.server = server
        self.concurrency = concurrency
        self.memory_bytes = 0
        self._metrics: dict[str, float] = {}
        self._metrics_at = 0.0
        # A remote deployment's health: "ok" after an answer, "down" after a failed /health
        # (checked when attached and whenever a request to it fails), with what failed.
        self.health: str | None = None if client.local else "ok"
        self.health_error: str | None = None

    @property
    def url(self) -> str:
        return self.client.url

    @property
    def remote(self) -> bool:
        return self.server is None

    @property
    def server_pid(self) -> int | None:
        """The vLLM API server's pid (its process group holds vLLM's other processes)."""
        return self.server.server_pid if self.server else None

    def on_exit(self, callback: Callable[[str], None]) -> None:
        if self.server is not None:
            self.server.on_exit(callback)

    def describe(self) -> dict[str, Any]:
        """What a status view shows: where it runs, the plan and the last metrics."""
        return {
            "url": self.url,
            "remote": self.remote,
            "servedModel": self.client.model,
            "pid": self.server_pid,
            "plan": self.plan.to_dict() if self.plan else None,
            "metrics": dict(self._metrics),
            **(
                {"health": self.health, "health_error": self.health_error}
                if not self.client.local
                else {}
            ),
        }

    async def runtime_metrics(self) -> dict[str, float]:
        """vLLM's own gauges and counters (running/waiting requests, KV cache usage 0..1, token
        totals, preemptions, prefix cache hits), read from /metrics at most once a second."""
        now = time.monotonic()
        if now - self._metrics_at >= METRICS_TTL_S:
            self._metrics_at = now
            try:
                self._metrics = await self.client.metrics()
            except Exception as e:  # a metrics hiccup must never fail a status call
                log.debug("vLLM metrics from %s failed: %s", self.url, e)
        return dict(self._metrics)

    async def count_tokens(self, text: str) -> int:
        try:
            return len(await self.client.tokenize(text))
        except IngotError as e:
            raise await self._explain(e) from None

    async def render_chat(self, messages: list[dict[str, Any]]) -> str:
        try:
            return await self.client.render_chat(messages)
        except IngotError as e:
            raise await self._explain(e) from None

    async def check_health(self) -> str | None:
        """A remote deployment's /health now (None: it answers); remembered for describe()."""
        why = await self.client.health()
        self.health, self.health_error = ("ok", None) if why is None else ("down", why)
        return why

    async def _explain(self, e: Exception) -> Exception:
        """A broken stream from a server that died says why it died (exit code, log tail); a
        failed request to a remote deployment checks its /health, and one that is down is
        RemoteUnavailable (a 502) whatever the request saw."""
        if self.server is not None and isinstance(e, GenerationFailed):
            await self.server.wait_ended(timeout_s=2.0)
            if not self.server.alive and self.server.exit_reason:
                return GenerationFailed(self.server.exit_reason)
        if not self.client.local and isinstance(e, (GenerationFailed, RemoteUnavailable)):
            why = await self.check_health()
            if why is not None and not isinstance(e, RemoteUnavailable):
                return RemoteUnavailable(
                    f"The vLLM deployment at {self.url} is down ({why}); the request failed: {e}",
                    hint=unreachable_hint(self.url),
                    model=self.variant_id,
                )
        return e

    async def generate(
        self, request: GenerationRequest, halt: HaltFlag
    ) -> AsyncGenerator[GenerationEvent, None]:
        prompt: str | list[int] = self.client.cached_tokens(request.prompt) or request.prompt
        n_prompt = len(prompt) if isinstance(prompt, list) else 0
        # Without max_tokens, stop at the model's output limit, within what the context leaves.
        room = self.context_length - n_prompt if n_prompt else self.context_length
        max_new = request.params.max_tokens or min(self.max_output_tokens, max(1, room))
        body = completion_body(request, model=self.client.model, prompt=prompt, max_tokens=max_new)
        queue: asyncio.Queue[StreamChunk | BaseException | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for chunk in self.client.stream(body):
                    queue.put_nowait(chunk)
                queue.put_nowait(None)
            except Exception as e:
                queue.put_nowait(await self._explain(e))

        started = time.monotonic()
        first: float | None = None
        produced = 0
        prompt_tokens = n_prompt
        cached = 0
        finish: FinishReason = "stop"
        reader = asyncio.create_task(pump(), name=f"vllm-stream-{self.variant_id}")
        reader.add_done_callback(lambda t: queue.put_nowait(_HALTED) if t.cancelled() else None)
        loop = asyncio.get_running_loop()

        # Closing the stream is how vLLM learns to abort: it stops within a token.
        def on_halt(_: str) -> None:
            loop.call_soon_threadsafe(reader.cancel)

        remove = halt.on_halt(on_halt)
        try:
            while (item := await queue.get()) is not None:
                if item is _HALTED:
                    finish = "stop" if halt.reason == "stop" else "cancelled"
                    break
                if isinstance(item, BaseException):
                    raise item
                if item.prompt_tokens is not None:
                    prompt_tokens = item.prompt_tokens
                if item.cached_tokens is not None:
                    cached = item.cached_tokens
                if item.text:
                    if first is None:
                        first = time.monotonic()
                    produced = item.completion_tokens or produced + 1
                    yield TextDelta(item.text, produced)
                elif item.completion_tokens is not None:
                    produced = max(produced, item.completion_tokens)
                if item.finish_reason is not None:
                    finish = FINISH.get(item.finish_reason, "stop")
        finally:
            remove()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        yield RuntimeStats(
            prompt_tokens=prompt_tokens,
            completion_tokens=produced,
            started=started,
            first_token=first,
            finished=time.monotonic(),
            finish_reason=finish,
            cached_tokens=cached,
        )

    async def close(self) -> None:
        await self.client.close()
        if self.server is not None:
            await self.server.close()

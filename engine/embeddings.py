"""Embedding requests and results, their limits, and the pipeline that runs one on a loaded model."""

from __future__ import annotations

import array
import base64
import sys
from dataclasses import dataclass, field

from engine.catalog.variant import ModelVariant
from engine.chat import check_text
from engine.clock import Clock
from engine.errors import InvalidRequest
from engine.loader import TtlLoader
from engine.requests import new_request_id
from engine.runtimes.base import EmbeddingInstance
from engine.scheduler import PRIORITY_CHAT
from engine.selector import not_a_chat_model
from engine.telemetry import RequestRecord, Telemetry

# As OpenAI's embeddings endpoint: at most this many inputs per request.
MAX_INPUTS = 2048
# A text longer than this cannot fit any embedding model's limit: refused before tokenizing.
MAX_TEXT_CHARS = 1_000_000


@dataclass(frozen=True)
class EmbeddingRequest:
    """Texts, or token-id rows of the model's own vocabulary (used as given), to embed.
    `truncate` cuts an input at the model's limit instead of refusing it."""

    model: str
    texts: tuple[str, ...] | None = None
    tokens: tuple[tuple[int, ...], ...] | None = None
    truncate: bool = False
    ttl_s: float | None = None
    priority: int = PRIORITY_CHAT
    request_id: str = field(default_factory=lambda: new_request_id("emb"))

    @property
    def count(self) -> int:
        return len(self.texts if self.texts is not None else self.tokens or ())


@dataclass(frozen=True)
class EmbeddingResult:
    request_id: str
    model_id: str
    dimensions: int
    vectors: tuple[bytes, ...]  # float32, little-endian: OpenAI's base64 format, decoded
    tokens: tuple[int, ...]  # per input
    record: RequestRecord

    @property
    def prompt_tokens(self) -> int:
        return sum(self.tokens)

    def floats(self, index: int) -> list[float]:
        return vector_floats(self.vectors[index])

    def base64(self, index: int) -> str:
        return base64.b64encode(self.vectors[index]).decode("ascii")


def vector_floats(raw: bytes) -> list[float]:
    """float32 little-endian bytes -> Python floats."""
    values = array.array("f")
    values.frombytes(raw)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def check_inputs(req: EmbeddingRequest) -> None:
    """Refuse what no model could embed, naming the input: none or too many, empty ones, text
    that is not valid Unicode."""
    if (req.texts is None) == (req.tokens is None):
        raise InvalidRequest("Send either texts or token arrays to embed.", param="input")
    n = req.count
    if n == 0:
        raise InvalidRequest("`input` is empty: send at least one text.", param="input")
    if n > MAX_INPUTS:
        raise InvalidRequest(
            f"`input` holds {n} items; at most {MAX_INPUTS} can be embedded in one request.",
            hint="Split the inputs over several requests.",
            param="input",
        )
    items = req.texts if req.texts is not None else req.tokens or ()
    for i, item in enumerate(items):
        if len(item) == 0:
            raise InvalidRequest(f"Input {i} is empty.", hint="Remove it.", param="input")
        if isinstance(item, str) and len(item) > MAX_TEXT_CHARS:
            raise InvalidRequest(
                f"Input {i} is {len(item)} characters long, more than any embedding model takes.",
                hint="Split the text into chunks of a few hundred words.",
                param="input",
            )
        if isinstance(item, str):
            check_text(item, "input")


async def run_embedding(
    *,
    loader: TtlLoader,
    telemetry: Telemetry,
    clock: Clock,
    variant: ModelVariant,
    req: EmbeddingRequest,
) -> EmbeddingResult:
    """Load (or reuse) the model, wait for a turn, embed, and record the request's telemetry."""
    check_inputs(req)
    requested = clock.monotonic()
    started_wall = clock.wall()
    async with loader.use(variant, ttl_s=req.ttl_s) as (entry, halt, load_s):
        inst = entry.instance
        if not isinstance(inst, EmbeddingInstance):
            raise not_a_chat_model(variant.id)  # pragma: no cover  (the service checks the task)
        async with entry.scheduler.slot(req.priority) as queue_s:
            began = clock.monotonic()
            out = await inst.embed(
                texts=list(req.texts) if req.texts is not None else None,
                tokens=[list(r) for r in req.tokens] if req.tokens is not None else None,
                truncate=req.truncate,
                halt=halt,
            )
        finished = clock.monotonic()
    n_tokens = sum(out.tokens)
    compute_s = finished - began
    record = RequestRecord(
        request_id=req.request_id,
        model_id=variant.id,
        runtime=variant.runtime,
        device=inst.device,
        kind="embed",
        started_at=started_wall,
        queue_ms=queue_s * 1000,
        load_ms=load_s * 1000,
        ttft_ms=None,
        total_ms=(finished - requested) * 1000,
        prompt_tokens=n_tokens,
        completion_tokens=0,
        prefill_tps=n_tokens / compute_s if compute_s > 0 else None,
        decode_tps=None,
        finish_reason="stop",
    )
    telemetry.record(record)
    return EmbeddingResult(
        request_id=req.request_id,
        model_id=variant.id,
        dimensions=out.dimensions,
        vectors=out.vectors,
        tokens=out.tokens,
        record=record,
    )

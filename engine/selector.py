"""RuntimeSelector: the variant's framework picks the runtime; says why one cannot run here."""

from __future__ import annotations

from engine.catalog.variant import EMBEDDINGS_TASK, ModelVariant
from engine.errors import RuntimeUnavailable, WrongModelTask
from engine.runtimes.base import Runtime


def not_a_chat_model(model_id: str) -> WrongModelTask:
    return WrongModelTask(
        f"{model_id} is an embedding model: it turns text into vectors and cannot chat or "
        "complete text.",
        hint="Send it to /v1/embeddings (`ingot/embed`, `ingot embed`), or pick a chat model "
        "(`ingot model list --filter task=chat`).",
        model=model_id,
        param="model",
    )


def not_an_embedding_model(v: ModelVariant) -> WrongModelTask:
    return WrongModelTask(
        f"{v.id} is a {v.task} model: it does not make embeddings.",
        hint="Pick an embedding model such as all-minilm-l6-v2 "
        "(`ingot model list --filter task=embeddings`).",
        model=v.id,
        task=v.task,
        param="model",
    )


class RuntimeSelector:
    def __init__(self, runtimes: dict[str, Runtime]) -> None:
        self.runtimes = runtimes

    def unavailable_reason(self, v: ModelVariant) -> str | None:
        if v.runtime not in self.runtimes:
            return f"the {v.runtime} runtime is not installed in this engine"
        return self.runtimes[v.runtime].unavailable_reason(v)

    @staticmethod
    def require_task(v: ModelVariant, task: str) -> None:
        """Embedding models only embed, and every other model only generates text."""
        if task == EMBEDDINGS_TASK and not v.is_embedding:
            raise not_an_embedding_model(v)
        if task != EMBEDDINGS_TASK and v.is_embedding:
            raise not_a_chat_model(v.id)

    def for_variant(self, v: ModelVariant) -> Runtime:
        why = self.unavailable_reason(v)
        if why:
            raise RuntimeUnavailable(f"{v.id} cannot run here: {why}.", model=v.id)
        return self.runtimes[v.runtime]

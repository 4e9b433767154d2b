"""WireModel: the pydantic base of every JSON-RPC wire type (camelCase on the wire, no unknown keys)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class WireModel(BaseModel):
    """Base of the JSON-RPC types: snake_case in Python, camelCase on the wire.

    Validation accepts either spelling (so handlers and tests can build models by field name);
    unknown keys are rejected, so a misspelt parameter is an error instead of being ignored.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def dump(self) -> dict[str, Any]:
        """The wire form: JSON-compatible values, camelCase keys, and no `null` members."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

"""Wire types for remote vLLM deployments: `ingot/remote/attach`, `ingot/remote/list`,
`ingot/remote/detach` (registered in protocol.jsonrpc.methods)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from protocol.base import WireModel


class RemoteAttachParams(WireModel):
    url: str = Field(
        description="The deployment's base URL, e.g. `http://gpu-node:8000` (a trailing `/v1` "
        "is dropped).",
        min_length=1,
        max_length=2048,
    )
    api_key: str | None = Field(
        None,
        description="The key the deployment was started with (vLLM's `--api-key`), sent as "
        "`Authorization: Bearer`. Stored in `<home>/remote-keys.json` (mode 0600), never in a "
        "catalog file, never logged.",
        max_length=4096,
        repr=False,
    )
    api_key_env: str | None = Field(
        None,
        description="Instead of `apiKey`: the name of an environment variable of the engine "
        "that holds the key (only the name is stored).",
        max_length=128,
    )
    name: str | None = Field(
        None,
        description="The attachment's name, and its model's name when it serves one model "
        "(`name-model` for several). Default: the host and port; the models keep their own "
        "names.",
        max_length=128,
    )


class RemoteModel(WireModel):
    """One model the deployment serves, as a catalog variant (runtime and device `remote`)."""

    id: str = Field(description="The variant's id (`name:1`), usable as any model.")
    name: str
    served_model: str = Field(description="Its name on the deployment (`/v1/models` id).")
    context_length: int = Field(description="vLLM's `max_model_len`.")
    runtime: Literal["remote"] = "remote"
    device: Literal["remote"] = "remote"
    loaded: bool
    health: Literal["ok", "down"] | None = Field(
        None,
        description="While loaded: `down` after a request failed and its `/health` did not "
        "answer; `ok` once it answers.",
    )
    health_error: str | None = Field(None, description="What the last failed check saw.")


class RemoteInfo(WireModel):
    name: str = Field(description="The attachment's name (`ingot model detach NAME`).")
    url: str
    key: Literal["stored", "env", "none"] = Field(
        description="Where its key is: the key file, an environment variable, or none."
    )
    api_key_env: str | None = Field(None, description="The variable's name, for `key: env`.")
    models: list[RemoteModel]


class RemoteListResult(WireModel):
    remotes: list[RemoteInfo]


class RemoteDetachParams(WireModel):
    remote: str = Field(
        description="The attachment's name, its URL, or the name or id of one of its models.",
        min_length=1,
        max_length=2048,
    )

"""RemoteAttacher: attach, list and detach remote vLLM deployments (`ingot model attach URL`)."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from engine.catalog.catalog import ModelCatalog, RegistrationStore, check_registration_name
from engine.catalog.variant import ModelVariant
from engine.errors import InvalidRequest, ModelNotFound, RemoteUnavailable
from engine.remotes import (
    KeySource,
    RemoteKeyStore,
    RemoteRecord,
    RemoteView,
    check_key,
    default_remote_name,
    find_remote,
    group_remotes,
    normalize_url,
    parse_models,
    remote_variant,
    variant_names,
)
from engine.runtimes.child_process import is_secret

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
Probe = Callable[[str, Mapping[str, str]], Awaitable[Any]]
PARAM_FOR_REASON = {"unauthorized": "apiKey", "unreachable": "url", "not_vllm": "url"}


async def _default_probe(url: str, headers: Mapping[str, str]) -> Any:
    from engine.runtimes.vllm_client import probe_deployment

    return await probe_deployment(url, headers)


class RemoteAttacher:
    """`unload(id)` unloads a loaded variant now (a re-attached or detached deployment's old
    connection holds the old key); `on_state(id, state)` publishes model state changes."""

    def __init__(
        self,
        catalog: ModelCatalog,
        keys: RemoteKeyStore,
        *,
        unload: Callable[[str], Awaitable[None]],
        on_state: Callable[[str, str], None],
        probe: Probe = _default_probe,
    ) -> None:
        self.catalog = catalog
        self.keys = keys
        self.unload = unload
        self.on_state = on_state
        self.probe = probe

    @property
    def store(self) -> RegistrationStore:
        if self.catalog.registrations is None:
            raise InvalidRequest("This engine has no registration store.")
        return self.catalog.registrations

    def attached(self) -> list[RemoteView]:
        return group_remotes(self.store.load())

    @staticmethod
    def _key(api_key: str | None, api_key_env: str | None) -> tuple[KeySource, str | None]:
        if api_key is not None and api_key_env is not None:
            raise InvalidRequest(
                "Give the key or the name of a variable that holds it, not both.",
                hint="Use --api-key or --api-key-env.",
                param="apiKey",
            )
        if api_key is not None:
            check_key(api_key, "apiKey")
            return "stored", api_key
        if api_key_env is not None:
            if not ENV_NAME.fullmatch(api_key_env):
                raise InvalidRequest(
                    f"{api_key_env[:80]!r} is not an environment variable name.",
                    hint="Give the variable's name (e.g. VLLM_API_KEY), not its value.",
                    param="apiKeyEnv",
                )
            if not is_secret(api_key_env):
                # Only variables named like secrets are kept from child processes (workers,
                # vLLM, compile steps): a key in any other would reach them.
                raise InvalidRequest(
                    f"{api_key_env} is not named like a secret, so Ingot would pass it on to its "
                    "child processes.",
                    hint="Put the key in a variable whose name ends in _KEY or _TOKEN (e.g. "
                    "VLLM_API_KEY), or give it with --api-key.",
                    param="apiKeyEnv",
                )
            value = os.environ.get(api_key_env)
            if not value:
                raise InvalidRequest(
                    f"The engine's environment has no variable {api_key_env}.",
                    hint="Set it where the engine runs (the editor's or `ingot service start`'s "
                    "environment) and restart it, or give the key with --api-key.",
                    param="apiKeyEnv",
                )
            check_key(value, "apiKeyEnv")
            return "env", value
        return "none", None

    async def attach(
        self,
        url: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        name: str | None = None,
    ) -> RemoteView:
        url = normalize_url(url)
        if name is not None:
            check_registration_name(name, "name")
            # Its models are called by it: a catalog model's name or alias is not free.
            self.catalog.check_registration(
                f"{name}:1", name, hint="Attach it under another --name."
            )
        source, key = self._key(api_key, api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            answer = await self.probe(url, headers)
            served = parse_models(answer)
        except RemoteUnavailable as e:
            reason = str(e.data.get("reason", "unreachable"))
            raise InvalidRequest(
                f"Cannot attach {url}: {e.message}",
                hint=e.hint,
                param=PARAM_FOR_REASON.get(reason, "url"),
                reason=reason,
            ) from None
        except ValueError as e:
            raise InvalidRequest(
                f"Cannot attach {url}: {e}.",
                hint="Check that the URL is a vLLM OpenAI server's base URL.",
                param="url",
            ) from None
        if not served:
            raise InvalidRequest(
                f"The deployment at {url} serves no models.", hint="Check its /v1/models."
            )
        current = self.attached()
        same_url = next((r for r in current if r.url == url), None)
        remote = name or (same_url.name if same_url else default_remote_name(url))
        taken = next((r for r in current if r.name == remote), None)
        if taken is not None and taken.url != url:
            raise InvalidRequest(
                f"The name '{remote}' belongs to the deployment at {taken.url}.",
                hint=f"Detach it first (`ingot model detach {remote}`) or choose another --name.",
                param="name",
            )
        if same_url is not None and same_url.name != remote:
            raise InvalidRequest(
                f"{url} is attached already, as '{same_url.name}'.",
                hint=f"Detach it first (`ingot model detach {same_url.name}`), or attach it "
                f"again with --name {same_url.name}.",
                param="name",
            )
        record = RemoteRecord(remote, source, api_key_env if source == "env" else None)
        names = variant_names(name, served)
        variants = [remote_variant(n, url, s, record) for n, s in zip(names, served, strict=True)]
        self._check_names(variants, remote)
        # The key first: a registration never names a key that is not there.
        if source == "stored" and key is not None:
            self.keys.put(remote, key)
        else:
            self.keys.remove(remote)
        old = taken.variants if taken is not None else ()
        for v in old:
            await self.unload(v.id)
            self.store.remove(v.id)
        for v in variants:
            self.store.add(v)
        new_ids = {v.id for v in variants}
        for v in old:
            if v.id not in new_ids:
                self.on_state(v.id, "deleted")
        for v in variants:
            self.on_state(v.id, "registered")
        return RemoteView(remote, url, source, record.api_key_env, tuple(variants))

    def _check_names(self, variants: list[ModelVariant], remote: str) -> None:
        """No catalog model's name or alias, no other registered model's, no other remote's."""
        hint = "Attach it under another --name."
        others = [
            v
            for v in self.store.load()
            if (rec := RemoteRecord.of(v)) is None or rec.name != remote
        ]
        for v in variants:
            self.catalog.check_registration(v.id, v.alias, hint=hint)
            clash = next((o for o in others if v.name in (o.name, o.alias)), None)
            if clash is not None:
                raise InvalidRequest(
                    f"'{v.name}' is taken by the registered model {clash.id}.",
                    hint=hint,
                    param="name",
                )

    def prune_keys(self) -> None:
        """After a remote model was removed on its own: the key goes with its last model."""
        self.keys.keep_only({r.name for r in self.attached()})

    async def detach(self, name_or_url: str) -> RemoteView:
        found = find_remote(self.attached(), name_or_url)
        if found is None:
            raise ModelNotFound(
                f"No remote deployment is attached as or at '{name_or_url[:200]}'.",
                hint="`ingot model remotes` lists what is attached.",
                model=name_or_url[:200],
            )
        for v in found.variants:
            await self.unload(v.id)
            self.store.remove(v.id)
        self.keys.remove(found.name)
        for v in found.variants:
            self.on_state(v.id, "deleted")
        return found

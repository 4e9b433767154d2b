"""Remote vLLM deployments attached by URL: their keys (a private file), names and catalog variants.

`ingot model attach URL` reads the deployment's /v1/models and registers each served model as a
variant whose source is `remote` (runtime `remote`: no files, no memory here). The variants live
in the registration store with the rest of the user's models; the key never does. It is kept in
`<home>/remote-keys.json`, written mode 0600 through a private temporary file and checked on every
read like the home's REST secret, or it stays in an environment variable of the engine whose name
is recorded instead (`--api-key-env`). Keys are never logged and never reach a child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from filelock import FileLock

from engine.catalog.catalog import check_registration_name
from engine.catalog.variant import Capabilities, ModelSource, ModelVariant
from engine.errors import IngotError, InvalidRequest, RemoteUnavailable

KEYS_FILE = "remote-keys.json"
POSIX = sys.platform != "win32"
KeySource = Literal["stored", "env", "none"]
# What a key may be: printable ASCII, as an HTTP header value must be.
MAX_KEY_CHARS = 4096
DEFAULT_CONTEXT = 4096
MAX_OUTPUT_TOKENS = 2048


class KeyFileError(IngotError):
    """The key file exists but must not be used (another owner, readable by others, damaged)."""

    kind = "internal"


@dataclass(frozen=True)
class RemoteRecord:
    """What `extra.remote` of an attached variant holds (never the key itself)."""

    name: str
    key: KeySource
    api_key_env: str | None = None

    def to_extra(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "key": self.key}
        if self.api_key_env:
            out["api_key_env"] = self.api_key_env
        return out

    @staticmethod
    def of(v: ModelVariant) -> RemoteRecord | None:
        raw = v.extra.get("remote")
        if v.source.kind != "remote" or not isinstance(raw, dict):
            return None
        key = raw.get("key")
        env = raw.get("api_key_env")
        return RemoteRecord(
            name=str(raw.get("name") or ""),
            key=key if key in ("stored", "env", "none") else "none",
            api_key_env=env if isinstance(env, str) else None,
        )


@dataclass(frozen=True)
class ServedModel:
    """One model a deployment's /v1/models lists."""

    id: str
    max_model_len: int | None = None


@dataclass(frozen=True)
class RemoteView:
    """An attached deployment: its name, URL, where its key is, and its variants."""

    name: str
    url: str
    key: KeySource
    api_key_env: str | None
    variants: tuple[ModelVariant, ...] = field(default=())


# -- the key file ------------------------------------------------------------------------------


def keys_path(home: Path) -> Path:
    return home / KEYS_FILE


def _fix_hint(path: Path) -> str:
    if POSIX:
        return (
            f"Run `chmod 600 {path}` as the user who runs Ingot, or delete it and attach the "
            "deployments again (`ingot model attach`)."
        )
    return "Delete it and attach the deployments again (`ingot model attach`)."


class RemoteKeyStore:
    """`<home>/remote-keys.json`: {"schema": 1, "keys": {remote name: key}}, mode 0600."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = keys_path(home)
        self._lock = FileLock(str(self.path) + ".lock")

    def _read(self) -> dict[str, str]:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise KeyFileError(
                f"Cannot read {self.path}: {e.strerror}.", hint=_fix_hint(self.path)
            ) from None
        try:
            st = os.fstat(fd)
            self._check(st)
            raw = b""
            while chunk := os.read(fd, 65536):
                raw += chunk
        finally:
            os.close(fd)
        try:
            data = json.loads(raw.decode("utf-8"))
            keys = data["keys"]
            if not isinstance(keys, dict):
                raise TypeError("keys is not an object")
        except (ValueError, KeyError, TypeError):
            raise KeyFileError(
                f"{self.path} is damaged (not an Ingot key file).", hint=_fix_hint(self.path)
            ) from None
        return {str(k): str(v) for k, v in keys.items()}

    def _check(self, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{self.path} is not a regular file.", hint=_fix_hint(self.path))
        if not POSIX:
            return
        if st.st_uid != os.geteuid():
            raise KeyFileError(
                f"{self.path} belongs to user id {st.st_uid}, not to you (user id "
                f"{os.geteuid()}); another user could have written its keys.",
                hint=f"Delete it as that user or as root (`rm {self.path}`), then attach again.",
            )
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{self.path} has mode {stat.S_IMODE(st.st_mode):04o}; other users could read "
                "the API keys in it.",
                hint=_fix_hint(self.path),
            )

    def _write(self, keys: dict[str, str]) -> None:
        """A private temporary file, synced, then renamed over the old one: a reader sees the
        old keys or the new ones, never a partial file, and never a moment of a wider mode."""
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.home / f".{KEYS_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        data = json.dumps({"schema": 1, "keys": keys}, indent=2).encode("utf-8")
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
            )
            try:
                if POSIX:
                    os.fchmod(fd, 0o600)  # whatever the umask
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as e:
            raise KeyFileError(
                f"Cannot write {self.path}: {e.strerror or e}.",
                hint=f"Check that you can write to {self.home}.",
            ) from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def get(self, name: str) -> str | None:
        return self._read().get(name)

    def put(self, name: str, key: str) -> None:
        with self._lock:
            keys = self._read()
            keys[name] = key
            self._write(keys)

    def remove(self, name: str) -> bool:
        with self._lock:
            keys = self._read()
            if name not in keys:
                return False
            del keys[name]
            self._write(keys)
            return True

    def keep_only(self, names: set[str]) -> None:
        """Forget the keys of attachments that no longer exist (their last model was removed)."""
        with self._lock:
            keys = self._read()
            kept = {k: v for k, v in keys.items() if k in names}
            if kept != keys:
                self._write(kept)


def remote_key(v: ModelVariant, home: Path | None) -> str | None:
    """The bearer key to send to an attached deployment: from the key file, from the variable
    the attachment named, or from a catalog file's `extra.api_key_env`."""
    rec = RemoteRecord.of(v)
    if rec is not None and rec.key == "stored":
        key = RemoteKeyStore(home).get(rec.name) if home is not None else None
        if key is None:
            raise RemoteUnavailable(
                f"The API key of the remote '{rec.name}' is missing from "
                f"{keys_path(home) if home else KEYS_FILE}.",
                hint=f"Attach it again with its key (`ingot model attach {v.source.url} "
                f"--name {rec.name} --api-key ...`).",
                model=v.id,
            )
        return key
    env = rec.api_key_env if rec is not None else v.extra.get("api_key_env")
    if isinstance(env, str) and env:
        return os.environ.get(env) or None
    return None


# -- URLs, names and variants ------------------------------------------------------------------


def normalize_url(url: str) -> str:
    """`http(s)://host[:port][/path]` without a trailing `/` or `/v1`; InvalidRequest otherwise."""
    raw = url.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as e:
        raise InvalidRequest(
            f"'{raw[:200]}' is not a URL: {e}.",
            hint="Give the deployment's base URL, e.g. http://gpu-node:8000.",
            param="url",
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest(
            f"'{raw[:200]}' is not an http(s) URL.",
            hint="Give the deployment's base URL, e.g. http://gpu-node:8000.",
            param="url",
        )
    if parts.username or parts.password:
        raise InvalidRequest(
            "The URL carries credentials; they would be stored with the model.",
            hint="Give the key with --api-key (or --api-key-env) instead.",
            param="url",
        )
    if parts.query or parts.fragment:
        raise InvalidRequest(
            f"'{raw[:200]}' has a query or fragment.",
            hint="Give the deployment's base URL, e.g. http://gpu-node:8000.",
            param="url",
        )
    path = parts.path.rstrip("/")
    path = path.removesuffix("/v1").rstrip("/")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{path}"


def slug(text: str) -> str:
    """A registration-safe name from a served model id or a host: lower case, [a-z0-9._-]."""
    s = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return s[:128] or "remote"


def default_remote_name(url: str) -> str:
    parts = urlsplit(url)
    base = slug(parts.hostname or "remote")
    return f"{base}-{parts.port}" if parts.port else base


def check_key(key: str, param: str) -> None:
    if not key or len(key) > MAX_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise InvalidRequest(
            "The API key must be 1 to 4096 printable ASCII characters.",
            hint="Copy the key the deployment was started with (vLLM's --api-key).",
            param=param,
        )


def variant_names(name: str | None, served: list[ServedModel]) -> list[str]:
    """Each served model's variant name: the given name for a single model, the name and the
    model's own for several; the model's own name (its last path part) without --name."""
    out = []
    for s in served:
        own = slug(s.id.rstrip("/").rsplit("/", 1)[-1])
        if name is None:
            out.append(own)
        elif len(served) == 1:
            out.append(name)
        else:
            out.append(f"{name}-{own}"[:128])
    for n in out:
        check_registration_name(n, "name")
    if len(set(out)) != len(out):
        raise InvalidRequest(
            "Two of the deployment's models would get the same name.",
            hint="Give the attachment a --name.",
            param="name",
        )
    return out


def parse_models(data: Any) -> list[ServedModel]:
    """The served models of a /v1/models answer (OpenAI's list shape; vLLM adds max_model_len)."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("its /v1/models answer has no `data` list")
    out = []
    for m in items:
        if not isinstance(m, dict) or not isinstance(m.get("id"), str) or not m["id"]:
            continue
        ctx = m.get("max_model_len")
        ok = isinstance(ctx, int) and not isinstance(ctx, bool) and ctx > 0
        out.append(ServedModel(m["id"], ctx if ok else None))
    return out


def remote_variant(name: str, url: str, served: ServedModel, record: RemoteRecord) -> ModelVariant:
    context = served.max_model_len or DEFAULT_CONTEXT
    host = urlsplit(url).netloc
    return ModelVariant(
        name=name,
        version=1,
        alias=name,
        display_name=f"{served.id} (remote {host})",
        publisher="remote",
        # Never planned or fitted here (source `remote`); vLLM deployments serve from GPUs.
        device="cuda",
        framework="vllm",
        source=ModelSource(kind="remote", url=url, served_model=served.id),
        size_bytes=0,
        context_length=context,
        license="see the deployment",
        description=f"Served by the vLLM deployment at {url} (attached as '{record.name}').",
        max_output_tokens=min(MAX_OUTPUT_TOKENS, context),
        default_context=context,
        capabilities=Capabilities(chat=True, tools=True, json_schema=True, fim=False),
        extra={"remote": record.to_extra()},
    )


def group_remotes(variants: Iterable[ModelVariant]) -> list[RemoteView]:
    """The attached deployments among registered variants, by name."""
    by_name: dict[str, list[ModelVariant]] = {}
    records: dict[str, RemoteRecord] = {}
    for v in variants:
        rec = RemoteRecord.of(v)
        if rec is None or not rec.name:
            continue
        by_name.setdefault(rec.name, []).append(v)
        records[rec.name] = rec
    return [
        RemoteView(
            name=n,
            url=str(vs[0].source.url),
            key=records[n].key,
            api_key_env=records[n].api_key_env,
            variants=tuple(sorted(vs, key=lambda v: v.name)),
        )
        for n, vs in sorted(by_name.items())
    ]


def find_remote(remotes: list[RemoteView], name_or_url: str) -> RemoteView | None:
    """A remote by its name, its URL, or the name or id of one of its models."""
    wanted = name_or_url.strip()
    for r in remotes:
        if r.name == wanted:
            return r
    with contextlib.suppress(InvalidRequest):
        url = normalize_url(wanted)
        for r in remotes:
            if r.url == url:
                return r
    for r in remotes:
        if any(wanted in (v.id, v.name) for v in r.variants):
            return r
    return None

"""ModelCache: one folder per variant with a manifest; atomic commits, file locks, move and verify."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from engine.errors import CacheError, ModelBusy
from engine.progress import CancelToken

log = logging.getLogger(__name__)

MANIFEST = "ingot-manifest.json"
# What a cache root holds (see ModelCache); left at a destination by an earlier cache, these are
# not someone else's content. engine/cache_dest.py checks a destination against the same set.
CACHE_ENTRIES = frozenset({"models", "partial", ".lock"})
# A waiter for another process's variant lock looks at its cancel token this often, so a cancel
# lands promptly and the worker thread it occupies is freed.
LOCK_STEP_S = 0.2
# Build scratch in `partial/`: `<variant>.build/` (this layout); `<variant>.work/` and
# `.<variant>.import-<pid>/` (older builds). Not resumable, unlike a download's
# `partial/<variant>/`, so nothing to keep once no process holds the variant's lock.
_BUILD_SCRATCH = re.compile(r"(?P<key>[^.].*)\.(?:build|work)|\.(?P<old>.+)\.import-\d+")


@dataclass(frozen=True)
class CachedFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    id: str
    source: str
    runtime: str
    framework: str
    device: str
    files: tuple[CachedFile, ...]
    created_at: float
    revision: str | None = None
    build: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        d = asdict(self)
        d["files"] = [asdict(f) for f in self.files]
        return json.dumps(d, indent=2)

    @staticmethod
    def from_json(text: str) -> Manifest:
        d = json.loads(text)
        d["files"] = tuple(CachedFile(**f) for f in d["files"])
        return Manifest(**d)


@dataclass(frozen=True)
class CacheEntry:
    manifest: Manifest
    path: Path


def safe_dirname(variant_id: str) -> str:
    """`phi-4-mini-instruct-cpu-int4:1` -> `phi-4-mini-instruct-cpu-int4--1`: portable folder names."""
    out = variant_id.replace(":", "--").replace("/", "__")
    if not out or out.startswith(".") or ".." in out:
        raise CacheError(f"'{variant_id}' cannot be used as a cache folder name.")
    return out


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def scan_files(folder: Path) -> tuple[CachedFile, ...]:
    files = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            files.append(CachedFile(rel, p.stat().st_size, sha256_file(p)))
    return tuple(files)


class ModelCache:
    """Layout under `root`: `models/<variant>/` (complete, with a manifest written last),
    `partial/<variant>/` (resumable downloads and builds in progress), `.lock` (cache-wide lock).

    A folder without a manifest is never reported as cached, so a crash mid-download or mid-compile
    cannot leave something that looks usable."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def partial_dir(self) -> Path:
        return self.root / "partial"

    def _ensure(self) -> None:
        try:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            self.partial_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CacheError(
                f"Cannot create the model cache at {self.root}: {e.strerror}.",
                hint="Check permissions, or move the cache with `ingot cache cd <folder>`.",
            ) from e

    def lock(self, timeout: float = 60.0) -> FileLock:
        self._ensure()
        return FileLock(str(self.root / ".lock"), timeout=timeout)

    def _variant_lock_file(self, key: str) -> FileLock:
        # Two FileLock objects on one path exclude each other even within a process (flock), so
        # this guards against other threads of this engine as well as other processes.
        return FileLock(str(self.partial_dir / f"{key}.lock"))

    @contextlib.contextmanager
    def variant_lock(
        self,
        variant_id: str,
        timeout: float = 3600.0,
        *,
        cancel: CancelToken | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> Iterator[None]:
        """Held while a variant is downloaded or built, so two writers never write it at once.

        Waits in steps of LOCK_STEP_S, looking at `cancel` between them: a cancelled waiter raises
        Cancelled at once instead of holding its worker thread for up to `timeout`. `on_wait` is
        called once if the lock is not free at the first try (to say why nothing moves)."""
        self._ensure()
        lock = self._variant_lock_file(safe_dirname(variant_id))
        deadline = time.monotonic() + timeout
        first = True
        while True:
            if cancel is not None:
                cancel.raise_if_cancelled(f"wait for {variant_id}")
            try:
                lock.acquire(timeout=0 if first else LOCK_STEP_S)
                break
            except Timeout:
                if first and on_wait is not None:
                    on_wait()
                first = False
                if time.monotonic() >= deadline:
                    raise CacheError(
                        f"Another process is still preparing {variant_id}.",
                        hint="Wait for it to finish, then try again.",
                    ) from None
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def _free_variant(self, key: str) -> Iterator[bool]:
        """True (and holding its lock) when no process is downloading or building `key` now."""
        lock = self._variant_lock_file(key)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def build_dir_for(self, variant_id: str) -> Path:
        """Scratch of one build (compile, import, export): its output and work folders, and any
        temporary folder its steps make next to the output. Removed whole when the build ends."""
        self._ensure()
        return self.partial_dir / f"{safe_dirname(variant_id)}.build"

    def clear_stale_builds(self) -> list[Path]:
        """Remove build scratch that no live process holds (a crashed or killed build); returns
        what was removed. Partial downloads stay: they resume."""
        removed = []
        for p, key in self._build_scratch():
            with self._free_variant(key) as free:
                if free:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        if removed:
            log.info("removed stale build folders: %s", ", ".join(p.name for p in removed))
        return removed

    def _build_scratch(self) -> list[tuple[Path, str]]:
        """(folder, variant lock key) of every build scratch folder in `partial/`."""
        if not self.partial_dir.is_dir():
            return []
        out = []
        for p in sorted(self.partial_dir.iterdir()):
            m = _BUILD_SCRATCH.fullmatch(p.name)
            if m is not None and p.is_dir():
                out.append((p, m["key"] or m["old"]))
        return out

    def path_for(self, variant_id: str) -> Path:
        return self.models_dir / safe_dirname(variant_id)

    def staging_for(self, variant_id: str) -> Path:
        self._ensure()
        return self.partial_dir / safe_dirname(variant_id)

    def get(self, variant_id: str) -> CacheEntry | None:
        folder = self.path_for(variant_id)
        try:
            manifest = Manifest.from_json((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return CacheEntry(manifest, folder)

    def is_cached(self, variant_id: str) -> bool:
        return (self.path_for(variant_id) / MANIFEST).is_file()

    def list(self) -> list[CacheEntry]:
        if not self.models_dir.is_dir():
            return []
        out = []
        for d in sorted(self.models_dir.iterdir()):
            try:
                m = Manifest.from_json((d / MANIFEST).read_text(encoding="utf-8"))
            except (OSError, ValueError, TypeError, KeyError):
                continue
            out.append(CacheEntry(m, d))
        return out

    def commit(self, staging: Path, manifest: Manifest) -> CacheEntry:
        """Move a finished staging folder into place, manifest last (the commit point)."""
        final = self.path_for(manifest.id)
        with self.lock():
            if final.exists():
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, final)
            tmp = final / (MANIFEST + ".tmp")
            tmp.write_text(manifest.to_json(), encoding="utf-8")
            os.replace(tmp, final / MANIFEST)
        return CacheEntry(manifest, final)

    def new_manifest(self, variant_id: str, folder: Path, **fields: Any) -> Manifest:
        return Manifest(id=variant_id, files=scan_files(folder), created_at=time.time(), **fields)

    def remove(self, variant_id: str) -> bool:
        """Delete a variant's folder and its partial files; refused (ModelBusy) while a process
        downloads or builds it, whose files would vanish under it."""
        key = safe_dirname(variant_id)
        self._ensure()
        with self._free_variant(key) as free, self.lock():
            if not free:
                raise ModelBusy(
                    f"{variant_id} is being downloaded or built by another Ingot process.",
                    hint="Cancel it there or wait for it to finish, then remove the model.",
                    model=variant_id,
                )
            existed = False
            partial = [self.partial_dir / f"{key}{s}" for s in ("", ".build", ".work")]
            for d in (self.path_for(variant_id), *partial):
                if d.exists():
                    # Drop the manifest first: a half-deleted folder must never look cached.
                    with contextlib.suppress(OSError):
                        (d / MANIFEST).unlink()
                    shutil.rmtree(d, ignore_errors=True)
                    existed = True
            return existed

    def verify(self, variant_id: str | None = None) -> dict[str, builtins.list[str]]:
        """Recompute every file's size and sha256 against its manifest. Returns {id: [problems]}."""
        entries = self.list() if variant_id is None else [e for e in [self.get(variant_id)] if e]
        report: dict[str, list[str]] = {}
        for e in entries:
            problems: builtins.list[str] = []
            for f in e.manifest.files:
                p = e.path / f.path
                if not p.is_file():
                    problems.append(f"{f.path}: missing")
                elif p.stat().st_size != f.size:
                    problems.append(f"{f.path}: size {p.stat().st_size}, expected {f.size}")
                elif sha256_file(p) != f.sha256:
                    problems.append(f"{f.path}: sha256 mismatch")
            report[e.manifest.id] = problems
        return report

    def disk_usage(self) -> int:
        return sum(e.manifest.size_bytes for e in self.list())

    def move_to(self, dest: Path) -> ModelCache:
        """Move the whole cache (models and partial downloads) to `dest`; returns the new cache."""
        dest = dest.expanduser().resolve()
        if dest == self.root.resolve():
            return self
        if dest.is_relative_to(self.root.resolve()):
            raise CacheError(f"Cannot move the cache into itself ({dest}).")
        # Lock files left by an earlier cache at `dest` are not content.
        if dest.exists() and any(p for p in dest.iterdir() if p.name not in CACHE_ENTRIES):
            raise CacheError(
                f"{dest} is not empty.",
                hint="Choose an empty or new folder for the cache.",
            )
        with self.lock(), contextlib.ExitStack() as held:
            # Every variant lock, so no other process is mid-download or mid-build (its files
            # would be moved under it) and none starts until the move is done.
            for lock_file in sorted(self.partial_dir.glob("*.lock")):
                key = lock_file.name.removesuffix(".lock")
                if not held.enter_context(self._free_variant(key)):
                    raise ModelBusy(
                        f"Another Ingot process is downloading or building in the cache ({key}).",
                        hint="Cancel it there or wait for it to finish, then move the cache.",
                    )
            # With every lock held, build scratch is what builds that died left: not worth moving.
            for scratch, _ in self._build_scratch():
                shutil.rmtree(scratch, ignore_errors=True)
            dest.mkdir(parents=True, exist_ok=True)
            for sub in ("models", "partial"):
                src = self.root / sub
                if not src.exists():
                    continue
                target = dest / sub
                target.mkdir(exist_ok=True)
                items = [i for i in src.iterdir() if i.suffix != ".lock"]
                for item in items:
                    if (target / item.name).exists():
                        raise CacheError(f"{target / item.name} already exists; nothing was moved.")
                for item in items:
                    shutil.move(str(item), str(target / item.name))
        return ModelCache(dest)

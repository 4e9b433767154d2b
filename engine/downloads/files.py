"""What a download fetches (RemoteFile), what it returns (FileRecord), and Staging: the layout of a
model folder being downloaded, with its resumable partial state and verified-file bookkeeping."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from engine.errors import DownloadFailed
from engine.progress import CancelToken

# Partial data lives in a hidden folder inside the model folder, so it moves and is removed together
# with it, and is deleted once every file is in place (the cache scans the folder for its manifest).
PARTIAL_DIR = ".ingot-partial"
READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch. `path` is relative to the model folder (the source's subfolder removed)."""

    path: str
    size: int
    sha256: str | None  # known for LFS files (the hub's lfs.sha256 / X-Linked-Etag)
    url: str
    repo_path: str = ""
    blob_id: str | None = None  # git blob oid of a file stored in git rather than LFS

    def identity(self) -> dict[str, Any]:
        """What a partial file must match to be resumed: the content's hashes, else its URL."""
        if self.sha256 or self.blob_id:
            return {"size": self.size, "sha256": self.sha256, "blob_id": self.blob_id}
        return {"size": self.size, "url": self.url}


@dataclass(frozen=True)
class FileRecord:
    path: str  # posix path relative to the model folder
    size: int
    sha256: str


def safe_relative(path: str) -> str:
    """`path` if it stays inside the model folder; a hostile listing must not write elsewhere."""
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or p.parts[0] == PARTIAL_DIR:
        raise DownloadFailed(
            f"The hub listed a file with an unsafe path: {path!r}.",
            hint="The repository or the mirror in HF_ENDPOINT is not trustworthy; check the model id.",
        )
    return p.as_posix()


class Digests:
    """sha256 of a file's bytes, plus its git blob oid when the hub gave one to check against."""

    def __init__(self, f: RemoteFile) -> None:
        self._f = f
        self.reset()

    def reset(self) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % self._f.size) if self._f.blob_id else None

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def update_from(self, path: Path, size: int, cancel: CancelToken) -> None:
        """Hash the first `size` bytes of `path` (a partial file being resumed)."""
        with path.open("rb") as fh:
            left = size
            while left > 0:
                cancel.raise_if_cancelled("download")
                block = fh.read(min(READ_BLOCK, left))
                if not block:
                    break
                self.update(block)
                left -= len(block)

    def mismatch(self) -> tuple[str, str, str] | None:
        """(kind, expected, actual) of the first check that fails, or None when all pass."""
        actual = self.sha256.hexdigest()
        if self._f.sha256 and actual != self._f.sha256.lower():
            return "sha256", self._f.sha256, actual
        if self.git is not None and self._f.blob_id and self.git.hexdigest() != self._f.blob_id:
            return "git blob id", self._f.blob_id, self.git.hexdigest()
        return None


class Staging:
    """`dest/<path>`: finished, verified files. `dest/.ingot-partial/<path>.incomplete` (+ `.json`,
    what it is a part of): resumable bytes. `dest/.ingot-partial/<path>.done.json`: a finished file's
    size, mtime and sha256, so a resumed download does not hash finished files again."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.partial = dest / PARTIAL_DIR

    def final(self, f: RemoteFile) -> Path:
        return self.dest / f.path

    def part(self, f: RemoteFile) -> Path:
        return self.partial / (f.path + ".incomplete")

    def _meta(self, f: RemoteFile) -> Path:
        return self.partial / (f.path + ".incomplete.json")

    def _done(self, f: RemoteFile) -> Path:
        return self.partial / (f.path + ".done.json")

    def prepare(self) -> None:
        self.partial.mkdir(parents=True, exist_ok=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)

    def partial_bytes(self, f: RemoteFile) -> int:
        """Bytes of `f` already on disk from an earlier attempt; a partial of anything else is dropped."""
        part, meta = self.part(f), self._meta(f)
        try:
            size = part.stat().st_size
            same = json.loads(meta.read_text(encoding="utf-8")) == f.identity()
        except (OSError, ValueError):
            size, same = 0, False
        if same and size <= f.size:
            return size
        self.discard(f)
        part.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(f.identity()), encoding="utf-8")
        return 0

    def discard(self, f: RemoteFile) -> None:
        for p in (self.part(f), self._meta(f)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    def finished(self, f: RemoteFile, cancel: CancelToken) -> str | None:
        """sha256 of `f` if it is already in place and verified; a wrong one is deleted."""
        final = self.final(f)
        try:
            st = final.stat()
        except FileNotFoundError:
            return None
        if not final.is_file() or st.st_size != f.size:
            self._remove(final)
            return None
        with contextlib.suppress(OSError, ValueError):
            done = json.loads(self._done(f).read_text(encoding="utf-8"))
            if done.get("mtime_ns") == st.st_mtime_ns and done.get("identity") == f.identity():
                return str(done["sha256"])
        digests = Digests(f)
        digests.update_from(final, f.size, cancel)
        if digests.mismatch() is not None:  # stale (the repo changed) or damaged: fetch it again
            self._remove(final)
            return None
        sha = digests.sha256.hexdigest()
        self.mark_done(f, sha)
        return sha

    def install(self, f: RemoteFile, sha256: str) -> None:
        """Move a complete, verified partial file into place."""
        final = self.final(f)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.part(f), final)
        with contextlib.suppress(FileNotFoundError):
            self._meta(f).unlink()
        self.mark_done(f, sha256)

    def mark_done(self, f: RemoteFile, sha256: str) -> None:
        done = self._done(f)
        done.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "mtime_ns": self.final(f).stat().st_mtime_ns,
            "identity": f.identity(),
            "sha256": sha256,
        }
        done.write_text(json.dumps(record), encoding="utf-8")

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

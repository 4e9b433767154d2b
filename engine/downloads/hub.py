"""HfDownloader: lists a Hugging Face repo's files (revision, subfolder, patterns) with
huggingface_hub and fetches them into a model folder — resumable, verified, cancellable."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx2
import huggingface_hub
from huggingface_hub import HfApi, constants, get_hf_file_metadata, get_token, hf_hub_url

from engine.catalog.variant import ModelSource
from engine.downloads.failures import describe, is_transient
from engine.downloads.files import FileRecord, RemoteFile, Staging, safe_relative
from engine.downloads.transfer import Meter, Transfer, human, pause
from engine.errors import Cancelled, DiskFull, DownloadFailed, IngotError, InvalidRequest
from engine.progress import CancelToken, ProgressCallback, no_progress

T = TypeVar("T")

API_TIMEOUT = 30.0  # listing a big repo with file metadata can take a while on the hub's side
DISK_MARGIN = 32 * 1024 * 1024  # room for the manifest, logs and file-system overhead
_SHA256 = re.compile(r"[0-9a-f]{64}")


class HfDownloader:
    """Downloads `source.repo` at `source.revision`, the files under `source.subfolder` that match
    `source.patterns`, into a model folder (the subfolder prefix removed).

    `endpoint` defaults to HF_ENDPOINT, else huggingface_hub's default hub; `token` defaults to
    HF_TOKEN, else the token stored by `hf auth login`. Blocking: call it from a worker thread.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        token: str | None = None,
        *,
        retries: int = 3,
        retry_wait: float = 1.0,
    ) -> None:
        # Read HF_ENDPOINT now rather than trusting huggingface_hub's import-time constant.
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip(
            "/"
        )
        self._token = token
        self.retries = retries
        self.retry_wait = retry_wait

    # -- listing ---------------------------------------------------------------------------------

    def plan(self, source: ModelSource, cancel: CancelToken | None = None) -> list[RemoteFile]:
        """The files a download of `source` fetches, smallest first, pinned to one commit."""
        repo, revision = _repo(source), source.revision or "main"
        cancel = cancel or CancelToken()
        api = HfApi(endpoint=self.endpoint, token=self._token, library_name="ingot")
        url = f"{self.endpoint}/api/models/{repo}/revision/{quote(revision, safe='')}"
        try:
            info = self._retrying(
                lambda: api.model_info(
                    repo, revision=revision, files_metadata=True, timeout=API_TIMEOUT
                ),
                cancel,
            )
        except IngotError:
            raise
        except Exception as e:
            raise describe(e, url=url, repo=repo, revision=revision, endpoint=self.endpoint) from e
        # Every file comes from the commit the revision points at now, even if the branch moves.
        commit = info.sha or revision
        sub = (source.subfolder or "").strip("/")
        prefix = f"{sub}/" if sub else ""
        files: list[RemoteFile] = []
        for s in info.siblings or []:
            name = s.rfilename
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix) :]
            if rel.rsplit("/", 1)[-1] == ".gitattributes":
                continue  # git bookkeeping, not part of the model
            if source.patterns and not (
                _matches(rel, source.patterns) or _matches(name, source.patterns)
            ):
                continue
            lfs = s.lfs
            size = s.size if s.size is not None else (lfs.size if lfs is not None else None)
            file_url = hf_hub_url(repo, name, revision=commit, endpoint=self.endpoint)
            sha = lfs.sha256.lower() if lfs is not None else None
            if size is None:
                size, sha = self._head(file_url, sha, repo=repo, revision=revision, path=name)
            files.append(
                RemoteFile(
                    path=safe_relative(rel),
                    size=size,
                    sha256=sha,
                    url=file_url,
                    repo_path=name,
                    blob_id=s.blob_id if lfs is None else None,
                )
            )
        if not files:
            listed = sorted({s.rfilename.split("/")[0] for s in info.siblings or []})[:12]
            where = f"{repo}@{revision}" + (f" under '{sub}/'" if sub else "")
            which = f" matching {list(source.patterns)}" if source.patterns else ""
            raise DownloadFailed(
                f"No files{which} in {where} ({url}).",
                hint=f"Check the subfolder and patterns of the catalog entry; the repository's top "
                f"level holds: {', '.join(listed) or 'nothing'}.",
                url=url,
                repo=repo,
                revision=revision,
            )
        return sorted(files, key=lambda f: (f.size, f.path))

    def _head(
        self, url: str, sha: str | None, *, repo: str, revision: str, path: str
    ) -> tuple[int, str | None]:
        """Size (and sha256, for LFS files) from a HEAD request, for listings that lack them."""
        try:
            meta = get_hf_file_metadata(url, token=self._token, endpoint=self.endpoint)
        except Exception as e:
            raise describe(
                e, url=url, repo=repo, revision=revision, endpoint=self.endpoint, path=path
            ) from e
        if meta.size is None:
            raise DownloadFailed(
                f"The hub reports no size for {url}.",
                hint="Check HF_ENDPOINT: a mirror or proxy may be altering the hub's answers.",
                url=url,
            )
        if sha is None and meta.etag and _SHA256.fullmatch(meta.etag):
            sha = meta.etag
        return meta.size, sha

    def _retrying(self, call: Callable[[], T], cancel: CancelToken) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except Exception as e:
                if attempt == self.retries or not is_transient(e):
                    raise
            pause(self.retry_wait * 2**attempt, cancel)
        raise AssertionError("unreachable")

    # -- downloading -----------------------------------------------------------------------------

    def download(
        self,
        source: ModelSource,
        dest: Path,
        *,
        progress: ProgressCallback = no_progress,
        cancel: CancelToken | None = None,
    ) -> list[FileRecord]:
        """Fetch `source` into `dest` (resuming what an earlier call left there); returns every
        file's record. Raises DownloadFailed, DiskFull or Cancelled (partial data stays in `dest`)."""
        cancel = cancel or CancelToken()
        repo, revision = _repo(source), source.revision or "main"
        label = source.describe().removeprefix("huggingface:")
        cancel.raise_if_cancelled("download")
        files = self.plan(source, cancel)
        staging = Staging(dest)
        records: dict[str, FileRecord] = {}
        current = files[0]
        try:
            present = _inventory(staging, files, records, cancel)
            total = sum(f.size for f in files)
            self._check_disk(dest, total - present, label)
            meter = Meter(progress, total=total, done=present, label=label)
            meter.emit()
            transfer = Transfer(
                staging,
                self._headers(),
                httpx2.Timeout(
                    constants.HF_HUB_DOWNLOAD_TIMEOUT, connect=constants.HF_HUB_ETAG_TIMEOUT
                ),
                meter,
                cancel,
                retries=self.retries,
                retry_wait=self.retry_wait,
            )
            for f in files:
                if f.path not in records:
                    current = f
                    records[f.path] = FileRecord(f.path, f.size, transfer.fetch(f))
        except Cancelled:
            done = sum(r.size for r in records.values()) + _partial_total(staging, files, records)
            raise Cancelled(
                f"The download of {label} was cancelled ({cancel.reason}); {human(done)} of "
                f"{human(sum(f.size for f in files))} are kept and the next download resumes there.",
                bytes_done=done,
                path=str(dest),
            ) from None
        except IngotError:
            raise
        except Exception as e:
            raise describe(
                e,
                url=current.url,
                repo=repo,
                revision=revision,
                endpoint=self.endpoint,
                path=current.path,
            ) from e
        staging.cleanup()
        meter.finish()
        return [records[p] for p in sorted(records)]

    def _headers(self) -> dict[str, str]:
        headers = {
            "user-agent": f"ingot; hf_hub/{huggingface_hub.__version__}",
            # The sizes and offsets we track are those of the file itself, not of a gzip stream.
            "accept-encoding": "identity",
        }
        token = self._token or get_token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        return headers

    @staticmethod
    def _check_disk(dest: Path, needed: int, label: str) -> None:
        if needed <= 0:
            return
        free = shutil.disk_usage(dest).free
        if free < needed + DISK_MARGIN:
            raise DiskFull(
                f"Not enough disk space to download {label}: it needs {human(needed)} "
                f"({needed} bytes) more, and only {human(free)} ({free} bytes) are free at {dest}.",
                hint="Free some space, or move the model cache to a larger disk with "
                "`ingot cache cd <folder>`, then retry.",
                needed_bytes=needed,
                free_bytes=free,
                path=str(dest),
            )


def _repo(source: ModelSource) -> str:
    if source.kind != "huggingface" or not source.repo:
        raise InvalidRequest(
            f"HfDownloader fetches Hugging Face repositories, not {source.describe()}.",
            hint="Give the catalog entry a `huggingface` source with a `repo`.",
        )
    return source.repo


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    # Same convention as snapshot_download's allow_patterns: "folder/" means everything below it.
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


def _inventory(
    staging: Staging, files: list[RemoteFile], records: dict[str, FileRecord], cancel: CancelToken
) -> int:
    """Record the files already in place and verified; returns the bytes already on disk
    (finished files plus resumable partial ones)."""
    staging.prepare()
    present = 0
    for f in files:
        sha = staging.finished(f, cancel)
        if sha is not None:
            records[f.path] = FileRecord(f.path, f.size, sha)
            present += f.size
        else:
            present += staging.partial_bytes(f)
    return present


def _partial_total(staging: Staging, files: list[RemoteFile], done: dict[str, FileRecord]) -> int:
    total = 0
    for f in files:
        if f.path not in done:
            with contextlib.suppress(OSError):
                total += staging.part(f).stat().st_size
    return total

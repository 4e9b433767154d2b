"""One file over HTTP into the staging folder: Range resume, retries, sha256 checks, cancellation
within a fraction of a second, and throttled progress reports."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import httpx2
from huggingface_hub import get_session, hf_raise_for_status
from huggingface_hub.errors import HfHubHTTPError

from engine.downloads.failures import TruncatedBody, is_transient
from engine.downloads.files import Digests, RemoteFile, Staging
from engine.errors import DownloadFailed
from engine.progress import CancelToken, Progress, ProgressCallback

POLL = 0.05  # how often a waiting download looks at its cancel token
QUEUE_CHUNKS = 64  # bounded read-ahead (~4 MiB of 64 KiB socket reads)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def human(n: int) -> str:
    """Bytes for people: 512 B, 98.4 MB, 3.2 GB."""
    if n < 1000:
        return f"{n} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6)):
        if n < scale * 1000:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e9:.1f} GB"


def raise_if_cancelled(cancel: CancelToken) -> None:
    cancel.raise_if_cancelled("download")


def pause(seconds: float, cancel: CancelToken) -> None:
    """Sleep between retries without delaying a cancel."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        raise_if_cancelled(cancel)
        time.sleep(min(POLL, left))
    raise_if_cancelled(cancel)


class BodyReader:
    """Streams one HTTP GET on a daemon thread into a bounded queue.

    A socket read blocks until data comes or the read timeout passes; reading on a helper thread
    lets the caller look at the cancel token every POLL seconds even while the network is silent.
    All file writes stay on the caller's thread, so nothing touches the partial file once the
    caller has raised Cancelled; the helper notices the stop flag at its next read and exits.
    """

    def __init__(self, url: str, headers: dict[str, str], timeout: httpx2.Timeout) -> None:
        self._url, self._headers, self._timeout = url, headers, timeout
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(QUEUE_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ingot-download", daemon=True)

    def __enter__(self) -> BodyReader:
        self._thread.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()

    def _put(self, item: tuple[str, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with get_session().stream(
                "GET", self._url, headers=self._headers, timeout=self._timeout
            ) as r:
                if r.status_code >= 400:
                    hf_raise_for_status(r)  # reads the error body; raises the hub's typed error
                if not self._put(("response", r)):
                    return
                for chunk in r.iter_bytes():
                    if self._stop.is_set():
                        return
                    if chunk and not self._put(("data", chunk)):
                        return
            self._put(("end", None))
        except Exception as e:
            self._put(("error", e))

    def _next(self, cancel: CancelToken) -> tuple[str, object]:
        while True:
            raise_if_cancelled(cancel)
            try:
                kind, value = self._queue.get(timeout=POLL)
            except queue.Empty:
                continue
            if kind == "error":
                assert isinstance(value, Exception)
                raise value
            return kind, value

    def response(self, cancel: CancelToken) -> httpx2.Response:
        kind, value = self._next(cancel)
        assert kind == "response"
        assert isinstance(value, httpx2.Response)
        return value

    def chunks(self, cancel: CancelToken) -> Iterator[bytes]:
        while True:
            kind, value = self._next(cancel)
            if kind == "end":
                return
            assert isinstance(value, bytes)
            yield value


class Meter:
    """Download progress across files, reported at most every `interval` seconds (first and last
    reports always go out)."""

    def __init__(
        self,
        callback: ProgressCallback,
        *,
        total: int,
        done: int,
        label: str,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._callback, self._clock, self._interval = callback, clock, interval
        self.total, self.done, self.label = total, done, label
        self._file: RemoteFile | None = None
        self._file_done = 0
        self._last: float | None = None

    def begin(self, f: RemoteFile, have: int) -> None:
        self._file, self._file_done = f, have

    def advance(self, n: int) -> None:
        self.done += n
        self._file_done += n
        if self._last is None or self._clock() - self._last >= self._interval:
            self.emit()

    def emit(self, message: str | None = None) -> None:
        self._last = self._clock()
        f = self._file
        text = message or (
            f"Downloading {self.label}: {f.path if f else 'starting'} "
            f"({human(self.done)} of {human(self.total)})"
        )
        self._callback(
            Progress(
                stage="download",
                message=text,
                fraction=min(self.done / self.total, 1.0) if self.total else None,
                bytes_done=self.done,
                bytes_total=self.total,
                file=f.path if f else None,
                file_bytes_done=self._file_done if f else None,
                file_bytes_total=f.size if f else None,
            )
        )

    def finish(self) -> None:
        self.done = self.total
        self._file_done = self._file.size if self._file else 0
        self._callback(
            Progress(
                stage="download",
                message=f"Downloaded {self.label} ({human(self.total)}).",
                fraction=1.0,
                bytes_done=self.total,
                bytes_total=self.total,
                file=self._file.path if self._file else None,
                file_bytes_done=self._file_done if self._file else None,
                file_bytes_total=self._file.size if self._file else None,
            )
        )


@dataclass
class Transfer:
    """Fetches files into `staging` with `headers` (auth, identity encoding)."""

    staging: Staging
    headers: dict[str, str]
    timeout: httpx2.Timeout
    meter: Meter
    cancel: CancelToken
    retries: int = 3
    retry_wait: float = 1.0

    def fetch(self, f: RemoteFile) -> str:
        """Download `f` (resuming a partial one), verify it, move it into place; returns its sha256."""
        part = self.staging.part(f)
        have = self.staging.partial_bytes(f)
        digests = Digests(f)
        if have:
            digests.update_from(part, have, self.cancel)
        else:
            part.touch()
        self.meter.begin(f, have)
        failures = 0
        while have < f.size:
            before = have
            try:
                self._attempt(f, have, digests)
            except Exception as e:
                refused_range = isinstance(e, HfHubHTTPError) and e.response.status_code == 416
                if not (refused_range or is_transient(e)):
                    raise
                have = part.stat().st_size  # what reached the disk is what the next attempt resumes
                if refused_range:
                    # The server does not accept our resume point: start this file over.
                    self.meter.advance(-have)
                    part.write_bytes(b"")
                    have = 0
                    digests.reset()
                failures = 1 if have > before else failures + 1
                if failures > self.retries:
                    raise
                pause(self.retry_wait * 2 ** (failures - 1), self.cancel)
                continue
            have = part.stat().st_size
        bad = digests.mismatch()
        if bad is not None:
            self.staging.discard(f)
            kind, expected, actual = bad
            raise DownloadFailed(
                f"Checksum mismatch for {f.path} downloaded from {f.url}: expected {kind} "
                f"{expected}, got {actual}. The damaged file was deleted.",
                hint="Retry the download; if it fails again, a proxy or mirror (HF_ENDPOINT) may be "
                "altering files, or the repository changed while downloading.",
                file=f.path,
                url=f.url,
                expected=expected,
                actual=actual,
            )
        sha = digests.sha256.hexdigest()
        self.staging.install(f, sha)
        return sha

    def _attempt(self, f: RemoteFile, have: int, digests: Digests) -> None:
        headers = dict(self.headers)
        if have:
            headers["Range"] = f"bytes={have}-"
        oversized = False
        with BodyReader(f.url, headers, self.timeout) as body:
            r = body.response(self.cancel)
            if have and r.status_code == 200:
                # The server (or a proxy) ignored the Range header and sends the whole file.
                self.meter.advance(-have)
                have = 0
                digests.reset()
            elif have and not _resumes_at(r, have):
                self.staging.discard(f)  # so that the next try starts this file over
                raise DownloadFailed(
                    f"{f.url} answered a request for bytes from {have} on with HTTP "
                    f"{r.status_code} and Content-Range {r.headers.get('Content-Range')!r}.",
                    hint="A proxy between you and the hub mangles resumed downloads: bypass it "
                    "(NO_PROXY) and retry; the partial file was discarded.",
                    file=f.path,
                    url=f.url,
                )
            with self.staging.part(f).open("r+b") as out:
                out.seek(have)
                out.truncate()
                for chunk in body.chunks(self.cancel):
                    if have + len(chunk) > f.size:
                        oversized = True
                        break
                    out.write(chunk)
                    digests.update(chunk)
                    have += len(chunk)
                    self.meter.advance(len(chunk))
        if oversized:
            self.staging.discard(f)
            raise DownloadFailed(
                f"{f.url} sent more than the {f.size} bytes the hub listed for {f.path}.",
                hint="The repository changed while downloading, or a proxy alters files: "
                "retry the download.",
                file=f.path,
                url=f.url,
            )
        if have < f.size:
            raise TruncatedBody(f"the body ended after {have} of {f.size} bytes")


def _resumes_at(r: httpx2.Response, have: int) -> bool:
    if r.status_code != 206:
        return False
    m = _CONTENT_RANGE.fullmatch(r.headers.get("Content-Range", "").strip())
    return m is not None and int(m.group(1)) == have

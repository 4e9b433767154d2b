"""HfTestServer: a local Hugging Face Hub look-alike for tests (model info, tree, resolve, LFS redirects,
Range requests, gated repos) with knobs for throttling, corruption, failures and byte counters."""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

# The real hub stores these (and anything big) in LFS: resolve answers with a redirect to a CDN and
# advertises the sha256 in X-Linked-Etag. Small text files are plain git blobs whose ETag is the oid.
LFS_SUFFIXES = (".gguf", ".onnx", ".data", ".bin", ".safetensors", ".pt")
LFS_MIN_SIZE = 10 * 1024 * 1024
PIECE = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

# Hashing the 98 MB GGUF takes a while: remember it across server instances.
_HASHES: dict[tuple[str, int, int], tuple[str, str]] = {}
_HASHES_LOCK = threading.Lock()


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob oid) of a file, cached by path, size and mtime."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASHES_LOCK:
        if key in _HASHES:
            return _HASHES[key]
    sha = hashlib.sha256()
    oid = hashlib.sha1(b"blob %d\0" % st.st_size)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            sha.update(block)
            oid.update(block)
    out = (sha.hexdigest(), oid.hexdigest())
    with _HASHES_LOCK:
        _HASHES[key] = out
    return out


@dataclass(frozen=True)
class RepoFile:
    path: str  # posix path in the repo
    disk: Path
    size: int
    sha256: str
    oid: str

    @property
    def lfs(self) -> bool:
        return self.path.endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE


@dataclass(frozen=True)
class Snapshot:
    commit: str
    files: dict[str, RepoFile]


@dataclass(frozen=True)
class Hit:
    """One request the server answered (for assertions about what a client asked for)."""

    method: str
    repo: str
    path: str
    range: str | None
    status: int
    authorized: bool


def _snapshot(repo: str, rev: str, folder: Path) -> Snapshot:
    files: dict[str, RepoFile] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            rel = p.relative_to(folder).as_posix()
            sha, oid = file_hashes(p)
            files[rel] = RepoFile(rel, p, p.stat().st_size, sha, oid)
    commit = hashlib.sha1(f"{repo}\0{rev}".encode()).hexdigest()
    return Snapshot(commit, files)


def _error(status: int, code: str | None, message: str) -> web.Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return web.json_response({"error": message}, status=status, headers=headers)


class HfTestServer:
    """Serves `repos` ({"namespace/name": folder}, the folder being the `main` revision) on 127.0.0.1.

    Runs its own event loop in a daemon thread, so it serves sync tests and async tests alike
    (`start()` blocks only until the socket listens). Knobs may be changed while it runs:
    `throttle_bps`, `gate()`, `corrupt()`, `advertise_sha256()`, `fail()`; counters: `served()`, `hits`.
    """

    def __init__(self, repos: dict[str, Path]) -> None:
        self._repos: dict[str, dict[str, Snapshot]] = {}
        for repo, folder in repos.items():
            self.add_revision(repo, "main", folder)
        self.throttle_bps: int | None = None
        self.ignore_ranges = False  # answer 200 with the whole file, as some proxies do
        self._drops: dict[tuple[str, str], list[int]] = {}  # [after_bytes, remaining]
        self._gated: dict[str, set[str]] = {}
        self._corrupt: set[tuple[str, str]] = set()
        self._fake_sha: dict[tuple[str, str], str] = {}
        self._failures: dict[tuple[str, str], list[int]] = {}  # [status, remaining (-1 = always)]
        self._served: Counter[tuple[str, str]] = Counter()
        self._in_flight = 0
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0

    # -- configuration ---------------------------------------------------------------------------

    def add_revision(self, repo: str, name: str, folder: Path) -> str:
        """Add a branch or tag `name` of `repo` with the files in `folder`; returns its commit sha."""
        snap = _snapshot(repo, name, folder)
        self._repos.setdefault(repo, {})[name] = snap
        return snap.commit

    def commit(self, repo: str, revision: str = "main") -> str:
        return self._repos[repo][revision].commit

    def gate(self, repo: str, tokens: Iterable[str] = ()) -> None:
        """Make `repo` gated: only requests bearing one of `tokens` may download its files."""
        self._gated[repo] = set(tokens)

    def corrupt(self, repo: str, path: str) -> None:
        """Serve `path` with one byte flipped in the middle (as a broken proxy or disk would)."""
        self._corrupt.add((repo, path))

    def advertise_sha256(self, repo: str, path: str, sha256: str) -> None:
        """Advertise a wrong sha256 for an LFS file in the listing and in X-Linked-Etag."""
        self._fake_sha[(repo, path)] = sha256

    def fail(self, repo: str, path: str, status: int, times: int | None = 1) -> None:
        """Answer `status` to the next `times` resolve requests for `path` (None: always)."""
        self._failures[(repo, path)] = [status, -1 if times is None else times]

    def drop(self, repo: str, path: str, after_bytes: int, times: int = 1) -> None:
        """Cut the connection after `after_bytes` of the body, for the next `times` responses."""
        self._drops[(repo, path)] = [after_bytes, times]

    def reset(self) -> None:
        """Drop every knob and counter (repos and revisions stay)."""
        with self._lock:
            self.throttle_bps = None
            self.ignore_ranges = False
            self._drops.clear()
            self._gated.clear()
            self._corrupt.clear()
            self._fake_sha.clear()
            self._failures.clear()
            self._served.clear()
            self.hits.clear()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no response body is being sent (e.g. the rest of a cancelled download)."""
        deadline = time.monotonic() + timeout
        while self._in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._in_flight} responses still in flight")
            time.sleep(0.01)

    def served(self, repo: str, path: str) -> int:
        """Body bytes written for `path` so far (they may not all have been read by the client)."""
        with self._lock:
            return self._served[(repo, path)]

    # -- lifetime --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> HfTestServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        self._port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            # A short shutdown timeout: a throttled response in flight must not hold up stop().
            self._runner = web.AppRunner(self._app(), shutdown_timeout=0.5, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
            ready.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="hf-test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test HF server did not start")
        return self

    def stop(self) -> None:
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> HfTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application()
        base = "/api/models/{ns}/{name}"
        app.router.add_get(base, self._info)
        app.router.add_get(base + "/revision/{rev}", self._info)
        app.router.add_get(base + "/tree/{rev}", self._tree)
        app.router.add_get(base + "/tree/{rev}/{path:.+}", self._tree)
        app.router.add_route("*", "/{ns}/{name}/resolve/{rev}/{path:.+}", self._resolve)
        app.router.add_route("*", "/_cdn/{ns}/{name}/{rev}/{path:.+}", self._cdn)
        return app

    def _token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _record(self, request: web.Request, repo: str, path: str, status: int) -> None:
        with self._lock:
            self.hits.append(
                Hit(
                    request.method,
                    repo,
                    path,
                    request.headers.get("Range"),
                    status,
                    self._token(request) is not None,
                )
            )

    def _lookup(self, request: web.Request) -> tuple[str, Snapshot | web.Response]:
        """The repo id and its snapshot at the requested revision, or the hub's error answer."""
        repo = f"{request.match_info['ns']}/{request.match_info['name']}"
        revs = self._repos.get(repo)
        if revs is None:
            # The hub answers 401 to anonymous requests for unknown (or private) repos, 404 otherwise.
            status = 404 if self._token(request) else 401
            return repo, _error(status, "RepoNotFound", "Repository not found")
        rev = request.match_info.get("rev", "main")
        for name, snap in revs.items():
            if rev in (name, snap.commit):
                return repo, snap
        return repo, _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _sha(self, repo: str, f: RepoFile) -> str:
        return self._fake_sha.get((repo, f.path), f.sha256)

    async def _info(self, request: web.Request) -> web.Response:
        repo, snap = self._lookup(request)
        if isinstance(snap, web.Response):
            return snap
        blobs = request.query.get("blobs", "").lower() in ("1", "true")
        siblings: list[dict[str, Any]] = []
        for f in snap.files.values():
            s: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                s["size"] = f.size
                s["blobId"] = f.oid
                if f.lfs:
                    s["lfs"] = {"sha256": self._sha(repo, f), "size": f.size, "pointerSize": 134}
            siblings.append(s)
        ns = repo.split("/", 1)[0]
        return web.json_response(
            {
                "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
                "id": repo,
                "modelId": repo,
                "author": ns,
                "sha": snap.commit,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2025-01-01T00:00:00.000Z",
                "private": False,
                "gated": "manual" if repo in self._gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["onnx", "gguf"],
                "siblings": siblings,
                "usedStorage": sum(f.size for f in snap.files.values()),
            }
        )

    async def _tree(self, request: web.Request) -> web.Response:
        repo, snap = self._lookup(request)
        if isinstance(snap, web.Response):
            return snap
        prefix = request.match_info.get("path", "").strip("/")
        recursive = request.query.get("recursive", "").lower() in ("1", "true")
        base = f"{prefix}/" if prefix else ""
        entries: list[dict[str, Any]] = []
        folders: set[str] = set()
        for f in snap.files.values():
            if not f.path.startswith(base):
                continue
            rest = f.path[len(base) :]
            parts = rest.split("/")
            for i in range(1, len(parts) if recursive else min(len(parts), 2)):
                folders.add(base + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                e: dict[str, Any] = {"type": "file", "oid": f.oid, "size": f.size, "path": f.path}
                if f.lfs:
                    e["lfs"] = {"oid": self._sha(repo, f), "size": f.size, "pointerSize": 134}
                entries.append(e)
        if prefix and not entries and not folders:
            return _error(404, "EntryNotFound", f'{prefix} does not exist on "{snap.commit}"')
        for d in sorted(folders):
            oid = hashlib.sha1(d.encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        return web.json_response(entries)

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        repo, snap = self._lookup(request)
        path = request.match_info["path"]
        answer = self._resolve_answer(request, repo, snap, path)
        if isinstance(answer, web.StreamResponse):
            self._record(request, repo, path, answer.status)
            return answer
        f, snap_ok = answer
        headers = {
            "X-Repo-Commit": snap_ok.commit,
            "Accept-Ranges": "bytes",
            "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size",
        }
        if f.lfs:
            sha = self._sha(repo, f)
            headers.update(
                {
                    "ETag": f'"{sha}"',
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(f.size),
                    "Location": f"/_cdn/{repo}/{snap_ok.commit}/{quote(path)}",
                    "Content-Length": "0",
                }
            )
            self._record(request, repo, path, 302)
            return web.Response(status=302, headers=headers)
        headers["ETag"] = f'"{f.oid}"'
        return await self._send(request, repo, f, headers)

    def _resolve_answer(
        self, request: web.Request, repo: str, snap: Snapshot | web.Response, path: str
    ) -> web.Response | tuple[RepoFile, Snapshot]:
        if isinstance(snap, web.Response) and snap.headers.get("X-Error-Code") == "RepoNotFound":
            return snap
        if repo in self._gated and self._token(request) not in self._gated[repo]:
            if self._token(request) is None:
                msg = (
                    f"Access to model {repo} is restricted. You must have access to it and be "
                    "authenticated to access it. Please log in."
                )
                return _error(401, "GatedRepo", msg)
            msg = (
                f"Access to model {repo} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{repo} to ask for access."
            )
            return _error(403, "GatedRepo", msg)
        if isinstance(snap, web.Response):
            return snap
        f = snap.files.get(path)
        if f is None:
            return _error(404, "EntryNotFound", "Entry not found")
        with self._lock:
            failure = self._failures.get((repo, path))
            if failure is not None and failure[1] != 0:
                failure[1] -= 1
                return _error(failure[0], None, "Internal Error - We're working hard to fix this.")
        return f, snap

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        repo, snap = self._lookup(request)
        path = request.match_info["path"]
        if isinstance(snap, web.Response) or path not in snap.files:
            self._record(request, repo, path, 404)
            return web.Response(status=404, text="NoSuchKey")
        f = snap.files[path]
        sha = self._sha(repo, f)
        # A CDN answers with the object's own headers; the hub headers are repeated so that a client
        # which follows the redirect for HEAD (same host here) still finds them.
        headers = {
            "ETag": f'"{sha}"',
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(f.size),
            "X-Repo-Commit": snap.commit,
            "Accept-Ranges": "bytes",
        }
        return await self._send(request, repo, f, headers)

    async def _pace(self, request: web.Request, seconds: float) -> None:
        """Sleep in slices, so that a very slow (stalled) response notices a client that left or
        a test that lifted the throttle."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and self.throttle_bps:
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client went away")
            await asyncio.sleep(min(left, 0.05))

    async def _send(
        self, request: web.Request, repo: str, f: RepoFile, headers: dict[str, str]
    ) -> web.StreamResponse:
        start, end = 0, f.size - 1
        status = 200
        rng = None if self.ignore_ranges else request.headers.get("Range")
        if rng:
            m = _RANGE.match(rng.strip())
            if m is None or (not m.group(1) and not m.group(2)):
                self._record(request, repo, f.path, 416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{f.size}"})
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), f.size - 1) if m.group(2) else f.size - 1
            else:  # suffix range: the last N bytes
                start = max(f.size - int(m.group(2)), 0)
            if start >= f.size or start > end:
                self._record(request, repo, f.path, 416)
                return web.Response(status=416, headers={"Content-Range": f"bytes */{f.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{f.size}"
        headers["Content-Length"] = str(end - start + 1)
        headers["Content-Type"] = (
            "application/json" if f.path.endswith(".json") else "application/octet-stream"
        )
        self._record(request, repo, f.path, status)
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        flip = f.size // 2 if (repo, f.path) in self._corrupt else -1
        cut = end + 1
        with self._lock:
            drop = self._drops.get((repo, f.path))
            if drop is not None and drop[1] > 0 and request.method == "GET":
                drop[1] -= 1
                cut = min(cut, start + drop[0])
        self._in_flight += 1  # only the server's loop thread changes it
        try:
            with f.disk.open("rb") as fh:
                fh.seek(start)
                pos = start
                while pos <= end:
                    if pos >= cut:
                        # Vanish mid-body, like a dropped connection: the client sees a short read.
                        if request.transport is not None:
                            request.transport.close()
                        return resp
                    piece = fh.read(min(PIECE, end - pos + 1, cut - pos))
                    if not piece:
                        break
                    if pos <= flip < pos + len(piece):
                        b = bytearray(piece)
                        b[flip - pos] ^= 0xFF
                        piece = bytes(b)
                    await resp.write(piece)
                    pos += len(piece)
                    with self._lock:
                        self._served[(repo, f.path)] += len(piece)
                    if self.throttle_bps:
                        await self._pace(request, len(piece) / self.throttle_bps)
            await resp.write_eof()
        except ConnectionError:
            pass  # the client went away (e.g. a cancelled download)
        finally:
            self._in_flight -= 1
        return resp

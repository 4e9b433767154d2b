"""Engine hardening (#14): secrets stay out of child processes, the vLLM child asks for its own key,
downloads are shared and cancellable while they wait, deletes and cache moves wait for nothing to
be mid-write, failed builds leave no scratch, and registrations cannot take catalog names."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from engine.bootstrap import build_engine
from engine.cache import ModelCache
from engine.catalog.variant import ModelSource
from engine.config import EngineConfig
from engine.errors import Cancelled, CompileFailed, InvalidRequest, ModelBusy, ModelNotCached
from engine.hardware import HardwareProfile
from engine.progress import CancelToken, Progress, ProgressCallback
from engine.service import EngineService
from tests.unit.fakes import FakeRuntime

HW = HardwareProfile("test", 2, 2, 24 * 1024**3, 20 * 1024**3)
SECRETS = {
    "INGOT_API_KEY": "ingot-key",
    "HF_TOKEN": "hf-token",
    "HUGGING_FACE_HUB_TOKEN": "hub-token",
    "OPENAI_API_KEY": "openai-key",
    "GITHUB_TOKEN": "gh",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "MY_SERVICE_PASSWORD": "pw",
    "GPU_NODE_KEY": "remote",  # what `ingot model attach --api-key-env` may name
}
HARMLESS = {
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "2",
    "HF_HOME": "/x",
    # Ingot settings that count tokens are not secrets: the worker needs them.
    "INGOT_TOKEN_FLUSH_MS": "50",
    "INGOT_MAX_TOKENS_LIMIT": "100",
}


# -- secrets and child processes -------------------------------------------------------------------
@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in {**SECRETS, **HARMLESS}.items():
        monkeypatch.setenv(k, v)


def test_model_workers_inherit_no_secrets(secret_env: None) -> None:
    from engine.runtimes.child_process import ChildProcess
    from engine.runtimes.model_worker import worker_env

    for env in (worker_env(), ChildProcess(["true"], env=None, name="x").env):
        assert env is not None
        assert not set(SECRETS) & set(env), sorted(set(SECRETS) & set(env))
        assert all(env[k] == v for k, v in HARMLESS.items())
    assert "PYTHONPATH" in worker_env()


def test_the_vllm_server_gets_its_own_key_in_its_environment_only(
    secret_env: None, tmp_path: Path
) -> None:
    from engine.runtimes.vllm import GUARD_DIR, server_args, server_env
    from tests.unit.test_vllm_runtime import runtime_with, vllm_variant

    plan = runtime_with("cpu", tmp_path).plan(vllm_variant())
    env = server_env(plan, tmp_path / "vllm-cache", "the-key")
    assert not set(SECRETS) & set(env)
    assert env["VLLM_API_KEY"] == "the-key"
    assert env["PYTHONPATH"] == str(GUARD_DIR)
    assert (GUARD_DIR / "ingot_guard.py").is_file()
    args = server_args(tmp_path, "m:1", 1234, plan)
    assert args[args.index("--middleware") + 1] == "ingot_guard.RequireKey"
    assert "the-key" not in args and "--api-key" not in args


async def test_the_engine_talks_to_its_vllm_child_with_that_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engine.runtimes.vllm as vllm_mod
    from tests.unit.test_vllm_runtime import runtime_with, vllm_variant

    started: list[Any] = []

    class FakeServer:
        server_pid = None

        def __init__(self, python: str, args: list[str], *, env: dict[str, str], **_: Any):
            self.args, self.env = args, env
            started.append(self)

        async def start(self) -> None:
            return None

        async def wait_ready(self, url: str, **_: Any) -> None:
            return None

        async def close(self) -> None:
            return None

    monkeypatch.setattr(vllm_mod, "VllmServer", FakeServer)
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    rt = runtime_with("cpu", tmp_path)
    inst = await rt.load(vllm_variant(), tmp_path, threads=None, progress=lambda p: None)
    try:
        (server,) = started
        key = server.env["VLLM_API_KEY"]
        assert len(key) >= 32 and key not in " ".join(server.args)
        assert inst.client.http.headers["Authorization"] == f"Bearer {key}"
        # A fresh key for every server.
        other = await rt.load(vllm_variant(), tmp_path, threads=None, progress=lambda p: None)
        assert started[1].env["VLLM_API_KEY"] != key
        await other.client.close()
    finally:
        await inst.client.close()


async def test_the_guard_asks_every_route_but_health_for_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from engine.runtimes.vllm_guard.ingot_guard import RequireKey

    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError):
        RequireKey(lambda s, r, w: asyncio.sleep(0))  # never an open server
    monkeypatch.setenv("VLLM_API_KEY", "k3y")
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    guard = RequireKey(app)

    async def call(path: str, auth: bytes | None = None) -> int | None:
        sent: list[dict[str, Any]] = []

        async def send(msg: Any) -> None:
            sent.append(msg)

        headers = [(b"authorization", auth)] if auth else []
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        await guard(scope, lambda: asyncio.sleep(0), send)  # type: ignore[arg-type,return-value]
        return sent[0]["status"] if sent else None

    for path in ("/invocations", "/v1/completions", "/tokenize", "/metrics", "/pooling"):
        assert await call(path) == 401
        assert await call(path, b"Bearer wrong") == 401
        assert await call(path, b"Basic k3y") == 401
        assert await call(path, b"Bearer k3y") is None
    assert await call("/health") is None
    assert reached == [
        "/invocations",
        "/v1/completions",
        "/tokenize",
        "/metrics",
        "/pooling",
        "/health",
    ]


# -- an engine with a model to download ------------------------------------------------------------
def catalog_file(path: Path) -> Path:
    def entry(name: str, **kw: Any) -> dict[str, Any]:
        return {
            "name": name,
            "version": 1,
            "alias": name.removesuffix("-cpu"),
            "display_name": name,
            "publisher": "test",
            "device": "cpu",
            "framework": "onnx",
            "source": {"kind": "huggingface", "repo": f"test/{name}"},
            "size_bytes": 1000,
            "context_length": 64,
            "license": "MIT",
            **kw,
        }

    variants = [
        entry("tiny-cpu"),
        entry("tiny-hf", framework="vllm"),
        entry(
            "tiny-built-cpu",
            source={"kind": "build"},
            build={"kind": "hf-to-onnx", "from_variant": "tiny-hf:1", "precision": "int8"},
        ),
    ]
    path.write_text(json.dumps({"schema": 1, "variants": variants}), encoding="utf-8")
    return path


class GateDownloader:
    """Writes a partial file, reports half done, then waits for `release` (or its cancel)."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()

    def download(
        self, source: ModelSource, dest: Path, *, progress: ProgressCallback, cancel: CancelToken
    ) -> list[Any]:
        self.calls += 1
        (dest / ".ingot-partial").mkdir(parents=True, exist_ok=True)
        (dest / ".ingot-partial" / "weights.incomplete").write_bytes(b"half")
        progress(Progress("download", "half", 0.5))
        self.started.set()
        while not self.release.wait(0.02):
            if cancel.cancelled:
                self.cancelled.set()
                raise Cancelled(f"The download was cancelled ({cancel.reason}); kept.")
        shutil.rmtree(dest / ".ingot-partial")
        (dest / "config.json").write_text("{}", encoding="utf-8")
        return []


class FakeCompiler:
    """Writes output and work files like the real steps, then fails (or cancels) if told to."""

    def __init__(self, fail: type[Exception] | None = CompileFailed) -> None:
        self.fail = fail
        self.calls = 0

    def gguf_to_hf(
        self, gguf: Path, out_dir: Path, *, progress: ProgressCallback, cancel: CancelToken
    ) -> None:
        self.calls += 1
        out_dir.mkdir(parents=True)
        (out_dir / "model.safetensors").write_bytes(b"0" * 100)

    def hf_to_onnx(self, hf_dir: Path, out_dir: Path, *, work_dir: Path, **_: Any) -> None:
        self.calls += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "float32.onnx.data").write_bytes(b"0" * 100)
        (out_dir / "model.onnx").write_bytes(b"onnx")
        if self.fail is not None:
            raise self.fail("the build broke")
        (out_dir / "genai_config.json").write_text('{"model": {}}', encoding="utf-8")
        (out_dir / "tokenizer.json").write_text("{}", encoding="utf-8")


@pytest.fixture
async def make_engine(tmp_path: Path) -> AsyncIterator[Any]:
    made: list[EngineService] = []

    def make(downloader: Any = None, compiler: Any = None) -> EngineService:
        svc = build_engine(
            EngineConfig(
                home=tmp_path / "home", extra_catalogs=(catalog_file(tmp_path / "c.json"),)
            ),
            hardware=HW,
            runtimes={"onnx-genai": FakeRuntime()},
            downloader=downloader or GateDownloader(),
            compiler=compiler or FakeCompiler(),
        )
        made.append(svc)
        return svc

    yield make
    for svc in made:
        await svc.jobs.close()


@pytest.fixture
async def gate() -> AsyncIterator[GateDownloader]:
    dl = GateDownloader()
    yield dl
    dl.release.set()


async def started(dl: GateDownloader) -> None:
    assert await asyncio.to_thread(dl.started.wait, 10)
    await asyncio.sleep(0.05)  # the progress report crosses to the loop


def partial_file(svc: EngineService, vid: str = "tiny-cpu:1") -> Path:
    return svc.cache.staging_for(vid) / ".ingot-partial" / "weights.incomplete"


# -- one download per model, whoever asks ----------------------------------------------------------
async def test_two_downloads_of_one_model_share_one_transfer(
    make_engine: Any, gate: GateDownloader
) -> None:
    svc = make_engine(gate)
    first: list[Progress] = []
    second: list[Progress] = []
    async with asyncio.timeout(20):
        t1 = asyncio.create_task(svc.download("tiny", progress=first.append))
        await started(gate)
        t2 = asyncio.create_task(svc.download("tiny-cpu:1", progress=second.append))
        await asyncio.sleep(0.3)
        assert [p.message for p in second] == ["half"]  # a late caller sees how far it got
        gate.release.set()
        v1, v2 = await asyncio.gather(t1, t2)
    assert gate.calls == 1 and v1.cached and v2.cached


async def test_cancelling_one_of_two_callers_leaves_the_download_running(
    make_engine: Any, gate: GateDownloader
) -> None:
    svc = make_engine(gate)
    async with asyncio.timeout(20):
        t1 = asyncio.create_task(svc.download("tiny"))
        await started(gate)
        mine = CancelToken()
        t2 = asyncio.create_task(svc.download("tiny", cancel=mine))
        await asyncio.sleep(0.1)
        mine.cancel("changed my mind")
        with pytest.raises(Cancelled) as e:
            await t2
        assert "still being downloaded" in e.value.message
        # So does a caller whose task is cancelled (a REST client that went away).
        t3 = asyncio.create_task(svc.download("tiny"))
        await asyncio.sleep(0.1)
        t3.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t3
        await asyncio.sleep(0.2)
        assert not gate.cancelled.is_set() and not t1.done()
        gate.release.set()
        assert (await t1).cached
    assert gate.calls == 1


async def test_the_last_caller_to_cancel_stops_the_download_and_keeps_its_partial_files(
    make_engine: Any, gate: GateDownloader
) -> None:
    svc = make_engine(gate)
    async with asyncio.timeout(20):
        mine = CancelToken()
        t1 = asyncio.create_task(svc.download("tiny", cancel=mine))
        await started(gate)
        mine.cancel("stop")
        with pytest.raises(Cancelled) as e:
            await t1
        assert "kept" in e.value.message and gate.cancelled.is_set()
        assert partial_file(svc).is_file()  # resumable
        # A task cancelled outright stops it as well.
        gate.started.clear()
        gate.cancelled.clear()
        t2 = asyncio.create_task(svc.download("tiny"))
        await started(gate)
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2
        assert gate.cancelled.is_set()
    assert svc.jobs.in_use() == []


async def test_a_wait_for_another_process_is_cancellable(make_engine: Any) -> None:
    svc = make_engine()
    cache: ModelCache = svc.cache
    cache.staging_for("tiny-cpu:1")  # creates partial/
    other = FileLock(str(cache.partial_dir / "tiny-cpu--1.lock"))  # another process's lock
    other.acquire()
    try:
        seen: list[Progress] = []
        mine = CancelToken()
        async with asyncio.timeout(20):
            t = asyncio.create_task(svc.download("tiny", progress=seen.append, cancel=mine))
            while not any("Waiting for another Ingot process" in p.message for p in seen):
                await asyncio.sleep(0.05)  # the 20 s timeout above bounds the wait
            t0 = time.monotonic()
            mine.cancel("gave up")
            with pytest.raises(Cancelled):
                await t
            assert time.monotonic() - t0 < 5.0
    finally:
        other.release()


def test_the_variant_lock_waits_in_steps_that_honour_cancel(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    cache.staging_for("m:1")
    other = FileLock(str(cache.partial_dir / "m--1.lock"))
    other.acquire()
    cancel = CancelToken()
    waits: list[int] = []
    threading.Timer(0.3, cancel.cancel).start()
    t0 = time.monotonic()
    with (
        pytest.raises(Cancelled),
        cache.variant_lock("m:1", cancel=cancel, on_wait=lambda: waits.append(1)),
    ):
        pass
    assert time.monotonic() - t0 < 2.0 and waits == [1]
    other.release()
    with cache.variant_lock("m:1", cancel=CancelToken()):
        pass


# -- deletes and cache moves while something is being written --------------------------------------
async def test_a_model_being_downloaded_cannot_be_deleted(
    make_engine: Any, gate: GateDownloader
) -> None:
    svc = make_engine(gate)
    async with asyncio.timeout(20):
        t = asyncio.create_task(svc.download("tiny"))
        await started(gate)
        with pytest.raises(ModelBusy) as e:
            await svc.delete("tiny-cpu:1")
        assert "being downloaded" in e.value.message and e.value.hint and "Cancel" in e.value.hint
        assert partial_file(svc).is_file()
        gate.release.set()
        await t
    assert await svc.delete("tiny-cpu:1")


async def test_a_model_a_build_reads_cannot_be_deleted(
    make_engine: Any, gate: GateDownloader
) -> None:
    svc = make_engine(gate)
    async with asyncio.timeout(20):
        t = asyncio.create_task(svc.download("tiny-built"))
        await started(gate)
        # tiny-built is compiled from tiny-hf, which is downloading now.
        with pytest.raises(ModelBusy):
            await svc.delete("tiny-hf:1")
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t


async def test_the_cache_does_not_move_while_a_download_runs(
    make_engine: Any, gate: GateDownloader, tmp_path: Path
) -> None:
    svc = make_engine(gate)
    old_root = svc.cache.root
    async with asyncio.timeout(20):
        t = asyncio.create_task(svc.download("tiny"))
        await started(gate)
        with pytest.raises(ModelBusy) as e:
            await svc.cache_move(tmp_path / "elsewhere")
        assert "tiny-cpu:1 is being downloaded" in e.value.message
        assert svc.cache.root == old_root and not (tmp_path / "elsewhere").exists()
        gate.release.set()
        await t
    # Nothing starts while it moves: no download, and no load of a model whose files move.
    with svc.jobs.moving(tmp_path / "elsewhere"):
        with pytest.raises(ModelBusy) as e2:
            await svc.download("tiny-hf")
        assert "being moved" in e2.value.message
        with pytest.raises(ModelBusy) as e3:
            await svc.load("tiny-cpu:1")
        assert "being moved" in e3.value.message
    info = await svc.cache_move(tmp_path / "elsewhere")
    assert info.models == 1


def test_another_processs_download_blocks_remove_and_move(tmp_path: Path) -> None:
    cache = ModelCache(tmp_path / "cache")
    staging = cache.staging_for("m:1")
    (staging / "part").mkdir(parents=True)
    other = FileLock(str(cache.partial_dir / "m--1.lock"))
    other.acquire()
    try:
        with pytest.raises(ModelBusy):
            cache.remove("m:1")
        assert (staging / "part").is_dir()
        with pytest.raises(ModelBusy):
            cache.move_to(tmp_path / "moved")
        assert (staging / "part").is_dir() and not (tmp_path / "moved" / "partial").exists()
    finally:
        other.release()
    assert cache.remove("m:1") and not staging.exists()


# -- build scratch ---------------------------------------------------------------------------------
def scratch(svc: EngineService) -> list[str]:
    part = svc.cache.partial_dir
    return sorted(p.name for p in part.iterdir() if p.suffix != ".lock") if part.is_dir() else []


@pytest.mark.parametrize("fail", [CompileFailed, Cancelled], ids=["failed", "cancelled"])
async def test_a_compile_that_fails_or_is_cancelled_leaves_no_scratch(
    make_engine: Any, tmp_path: Path, fail: type[Exception]
) -> None:
    hf = tmp_path / "my-model"
    hf.mkdir()
    (hf / "config.json").write_text("{}", encoding="utf-8")
    svc = make_engine(compiler=FakeCompiler(fail))
    with pytest.raises(fail):
        await svc.compile(str(hf), name="mine")
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(fail):
        await svc.compile(str(gguf), name="mine2")  # converted to HF in the scratch first
    assert scratch(svc) == []
    assert svc.jobs.in_use() == []


async def test_a_catalog_build_that_fails_keeps_its_download_but_not_its_scratch(
    make_engine: Any, gate: GateDownloader
) -> None:
    gate.release.set()
    svc = make_engine(gate, FakeCompiler(CompileFailed))
    with pytest.raises(CompileFailed):
        await svc.download("tiny-built")
    assert scratch(svc) == []
    assert svc.provisioner.is_present(svc.catalog.get("tiny-hf:1"))


async def test_a_compile_that_works_leaves_no_scratch_either(
    make_engine: Any, tmp_path: Path
) -> None:
    hf = tmp_path / "my-model"
    hf.mkdir()
    (hf / "config.json").write_text("{}", encoding="utf-8")
    svc = make_engine(compiler=FakeCompiler(None))
    view = await svc.compile(str(hf), name="mine")
    assert view.variant.id == "mine-cpu-int8:1" and view.cached
    assert scratch(svc) == []


async def test_stale_build_scratch_is_cleared_at_start_unless_a_process_holds_it(
    make_engine: Any,
) -> None:
    svc = make_engine()
    part = svc.cache.staging_for("x:1").parent
    for name in ("a--1.build/out", "b--1.work/build", ".c--1.import-4242/hf", "held--1.build/out"):
        (part / name).mkdir(parents=True)
        (part / name / "big.bin").write_bytes(b"0" * 100)
    download = part / "d--1" / ".ingot-partial"
    download.mkdir(parents=True)
    (download / "w.incomplete").write_bytes(b"resume me")
    other = FileLock(str(part / "held--1.lock"))
    other.acquire()
    try:
        await svc.start()
        await svc.close()
    finally:
        other.release()
    assert scratch(svc) == ["d--1", "held--1.build"]


# -- names of your own models ----------------------------------------------------------------------
def onnx_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "genai_config.json").write_text('{"model": {}}', encoding="utf-8")
    (path / "tokenizer.json").write_text("{}", encoding="utf-8")
    (path / "model.onnx").write_bytes(b"onnx")
    return path


@pytest.mark.parametrize(
    ("name", "alias", "param"),
    [
        ("smollm2-135m", None, "name"),  # a catalog alias
        ("SmolLM2-135M", None, "name"),  # the same, as typed
        ("mine", "smollm2-135m", "alias"),
        ("mine", "phi-4-mini-instruct-cpu-int4", "alias"),  # a catalog name
        ("smollm2-135m-instruct-cpu-gguf", None, "name"),  # a catalog variant's name (its id)
        ("tiny", None, "name"),  # an extra catalog's alias
    ],
)
async def test_a_registration_cannot_take_a_catalog_name(
    make_engine: Any, tmp_path: Path, name: str, alias: str | None, param: str
) -> None:
    svc = make_engine()
    with pytest.raises(InvalidRequest) as e:
        await svc.register(onnx_folder(tmp_path / "m"), name=name, alias=alias)
    assert "taken by the catalog model" in e.value.message and e.value.data["param"] == param
    assert not svc.catalog.registrations.load()


@pytest.mark.parametrize(
    "bad", ["my model", "../up", "a/b", "a\\b", "x:2", "-dash", ".dot", "tab\there", "é", "a" * 129]
)
async def test_names_and_aliases_say_what_is_allowed(
    make_engine: Any, tmp_path: Path, bad: str
) -> None:
    svc = make_engine()
    folder = onnx_folder(tmp_path / "m")
    for kw in ({"name": bad}, {"name": "fine", "alias": bad}):
        with pytest.raises(InvalidRequest) as e:
            await svc.register(folder, **kw)
        assert e.value.hint and "letters, digits" in e.value.hint
        assert e.value.data["param"] == ("alias" if "alias" in kw else "name")
    with pytest.raises(InvalidRequest):
        await svc.import_gguf(tmp_path / "x.gguf", name=bad)
    with pytest.raises(InvalidRequest):
        await svc.compile(str(folder), name=bad)


async def test_good_names_register(make_engine: Any, tmp_path: Path) -> None:
    svc = make_engine()
    view = await svc.register(onnx_folder(tmp_path / "m"), name="My_Model.v2", alias="mm-2")
    assert view.variant.id == "my-model.v2:1" and view.variant.alias == "mm-2"
    assert svc.resolve("mm-2").id == "my-model.v2:1"


async def test_a_compile_named_like_a_catalog_model_is_refused_before_any_work(
    make_engine: Any, tmp_path: Path
) -> None:
    compiler = FakeCompiler(None)
    svc = make_engine(compiler=compiler)
    hf = tmp_path / "smollm2-135m"  # the default name is the folder's
    hf.mkdir()
    (hf / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(InvalidRequest) as e:
        await svc.compile(str(hf))
    assert e.value.hint and "--name" in e.value.hint and compiler.calls == 0


async def test_a_catalog_model_compiles_under_a_name_of_its_own(
    make_engine: Any, gate: GateDownloader
) -> None:
    gate.release.set()
    svc = make_engine(gate, FakeCompiler(None))
    view = await svc.compile("tiny-hf")
    assert view.variant.alias != "tiny-hf" and view.variant.id == "tiny-hf-local-cpu-int8:1"
    assert svc.resolve("tiny-hf").id == "tiny-hf:1"


# -- the download hint -----------------------------------------------------------------------------
def test_the_not_downloaded_hint_names_the_variant(make_engine: Any) -> None:
    svc = make_engine()
    with pytest.raises(ModelNotCached) as e:
        svc.runnable("tiny-cpu:1")
    assert e.value.hint == "Run `ingot model download tiny-cpu:1` first."


def test_compile_children_get_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.compile.toolchain import child_env

    monkeypatch.setenv("HF_TOKEN", "hf_x")
    monkeypatch.setenv("INGOT_API_KEY", "k")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    env = child_env()
    assert "HF_TOKEN" not in env and "INGOT_API_KEY" not in env
    assert env["TOKENIZERS_PARALLELISM"] == "false" and env["HF_HUB_OFFLINE"] == "1"

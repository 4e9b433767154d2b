"""What a model variant is: its identity, where its files come from, how it is built and what it needs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Device = Literal["cpu", "cuda"]
Framework = Literal["onnx", "vllm"]
RuntimeName = Literal["onnx-genai", "vllm", "onnxruntime"]
SourceKind = Literal["huggingface", "pypi", "local", "remote", "build"]
Precision = Literal["int4", "int8", "fp16", "fp32"]

RUNTIME_FOR_FRAMEWORK: dict[str, RuntimeName] = {"onnx": "onnx-genai", "vllm": "vllm"}
# What a variant does: generate text (chat, completions, edits) or turn text into vectors.
CHAT_TASK = "chat-completion"
EMBEDDINGS_TASK = "embeddings"
# An ONNX embedding model is a plain ONNX graph run by ONNX Runtime, not a GenAI decoder.
EMBEDDING_RUNTIME: RuntimeName = "onnxruntime"


@dataclass(frozen=True)
class ModelSource:
    """Where a variant's files come from.

    - huggingface: `repo` at `revision`, files under `subfolder` matching `patterns`;
    - pypi: the file `file` inside the PyPI package `package` (`package_version` pins it);
    - local: an existing folder `path` registered by the user (bring your own model);
    - remote: an already running OpenAI-compatible server (a vLLM deployment) at `url`;
    - build: produced locally by `BuildRecipe` from another variant's files.
    """

    kind: SourceKind
    repo: str | None = None
    revision: str = "main"
    subfolder: str | None = None
    patterns: tuple[str, ...] = ()
    package: str | None = None
    package_version: str | None = None
    file: str | None = None
    path: str | None = None
    url: str | None = None
    served_model: str | None = None

    def describe(self) -> str:
        if self.kind == "huggingface":
            sub = f"/{self.subfolder}" if self.subfolder else ""
            return f"huggingface:{self.repo}@{self.revision}{sub}"
        if self.kind == "pypi":
            ver = f"=={self.package_version}" if self.package_version else ""
            return f"pypi:{self.package}{ver}/{self.file}"
        if self.kind == "local":
            return f"local:{self.path}"
        if self.kind == "remote":
            return f"remote:{self.url}"
        return "build"


@dataclass(frozen=True)
class BuildRecipe:
    """How a variant is produced locally from the files of another variant (`from_variant`).

    - gguf-to-hf: a GGUF file -> a float32 safetensors Hugging Face folder (with tokenizer);
    - hf-to-onnx: a Hugging Face folder -> an ONNX Runtime GenAI folder via the model builder;
    - gguf-import: a GGUF file -> an ONNX Runtime GenAI folder that keeps the GGUF's own
      quantised blocks (engine.compile.import_gguf; the most faithful, and the smallest);
    - embedding-export: a zipped sentence-transformers folder -> an ONNX encoder with its
      tokenizer and pooling settings (engine.compile.embeddings.build).
    """

    kind: Literal["gguf-to-hf", "hf-to-onnx", "gguf-import", "embedding-export"]
    precision: Precision = "int8"
    device: Device = "cpu"
    extra_options: dict[str, str] = field(default_factory=dict)
    from_variant: str | None = None


@dataclass(frozen=True)
class Capabilities:
    chat: bool = True
    tools: bool = False
    json_schema: bool = True
    fim: bool = False


@dataclass(frozen=True)
class KvShape:
    """Enough of the architecture to size the KV cache: bytes per token = 2 * layers * kv_heads * head_dim * dtype."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 4

    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    # The two config files a model folder may carry. Both return None when the file does not
    # describe the architecture and raise ValueError/TypeError when it does so with bad values,
    # so a caller can tell "unknown" from "broken".
    @classmethod
    def from_genai_config(cls, genai: Mapping[str, Any], device: str) -> KvShape | None:
        """From an ONNX Runtime GenAI genai_config.json (its CPU KV cache is float32, its CUDA
        one float16)."""
        model = genai.get("model") if isinstance(genai, Mapping) else None
        dec = model.get("decoder") if isinstance(model, Mapping) else None
        if not isinstance(dec, Mapping) or not dec.keys() >= _GENAI_KEYS:
            return None
        return cls._checked(
            dec["num_hidden_layers"],
            dec["num_key_value_heads"],
            dec["head_size"],
            2 if device == "cuda" else 4,
        )

    @classmethod
    def from_hf_config(cls, hf: Mapping[str, Any], dtype_bytes: int = 2) -> KvShape | None:
        """From a Hugging Face config.json (head_dim defaults to hidden_size / heads)."""
        if "num_hidden_layers" not in hf or "num_attention_heads" not in hf:
            return None
        heads = _positive("num_attention_heads", hf["num_attention_heads"])
        head_dim = hf.get("head_dim")
        if not head_dim:
            if "hidden_size" not in hf:
                raise ValueError("it gives neither head_dim nor hidden_size")
            head_dim = _positive("hidden_size", hf["hidden_size"]) // heads
        return cls._checked(
            hf["num_hidden_layers"], hf.get("num_key_value_heads") or heads, head_dim, dtype_bytes
        )

    @classmethod
    def _checked(cls, layers: Any, kv_heads: Any, head_dim: Any, dtype_bytes: int) -> KvShape:
        return cls(
            _positive("num_hidden_layers", layers),
            _positive("num_key_value_heads", kv_heads),
            _positive("head size", head_dim),
            dtype_bytes,
        )


def _positive(name: str, value: Any) -> int:
    """A config's count as a positive int; ValueError (naming it) for anything else, so a
    broken config never sizes a KV cache at zero or below."""
    try:
        n = int(value)
    except OverflowError:  # json.loads reads Infinity
        raise ValueError(f"{name} is {value}") from None
    if isinstance(value, bool) or n <= 0 or n != value:
        raise ValueError(f"{name} is {value!r}")
    return n


_GENAI_KEYS = {"num_hidden_layers", "num_key_value_heads", "head_size"}


@dataclass(frozen=True)
class ModelVariant:
    """One concrete, runnable form of a model: an id `name:version`, a device and a framework."""

    name: str
    version: int
    alias: str
    display_name: str
    publisher: str
    device: Device
    framework: Framework
    source: ModelSource
    size_bytes: int
    context_length: int
    license: str
    task: str = CHAT_TASK
    license_url: str | None = None
    description: str = ""
    max_output_tokens: int = 2048
    # The context the fit check and the vLLM planner size the KV cache for; None = min(context, 4096).
    default_context: int | None = None
    capabilities: Capabilities = field(default_factory=Capabilities)
    kv: KvShape | None = None
    build: BuildRecipe | None = None
    prompt_template: dict[str, str] | None = None
    # Requires an explicit opt-in to be offered (e.g. vLLM's CPU build).
    opt_in: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def planned_context(self) -> int:
        return self.default_context or min(self.context_length, 4096)

    @property
    def is_embedding(self) -> bool:
        return self.task == EMBEDDINGS_TASK

    @property
    def runtime(self) -> RuntimeName:
        if self.is_embedding and self.framework == "onnx":
            return EMBEDDING_RUNTIME
        return RUNTIME_FOR_FRAMEWORK[self.framework]

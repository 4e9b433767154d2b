"""Model compilation: GGUF -> Hugging Face folder -> ONNX Runtime GenAI folder, in child processes."""

from engine.compile.compiler import Compiler
from engine.compile.pypi_files import locate_pypi_file

__all__ = ["Compiler", "locate_pypi_file"]

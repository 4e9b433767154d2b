"""Model compilation: GGUF -> Hugging Face folder -> ONNX Runtime GenAI folder, in child processes."""

from engine.compile.compiler import Compiler
from engine.compile.fidelity import FidelityReport, measure_fidelity
from engine.compile.gguf_import import ImportReport, import_gguf
from engine.compile.pypi_files import locate_pypi_file

__all__ = [
    "Compiler",
    "FidelityReport",
    "ImportReport",
    "import_gguf",
    "locate_pypi_file",
    "measure_fidelity",
]

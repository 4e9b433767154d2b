"""Editing a built ONNX model: its external data read in, initializers swapped, nodes spliced in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.compile.gguf_blocks import BLOCK

MS_DOMAIN = "com.microsoft"
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"


def load_model(folder: Path) -> Any:
    """The folder's model.onnx with its external data read in.

    onnx's own loader refuses data files with several hard links, which model caches use freely.
    """
    import onnx

    model = onnx.load(str(folder / MODEL_FILE), load_external_data=False)
    files: dict[str, NDArray[np.uint8]] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info["location"]
        if Path(location).is_absolute() or ".." in Path(location).parts:
            raise ValueError(f"{MODEL_FILE} points outside its folder: {location}")
        if location not in files:
            files[location] = np.memmap(folder / location, dtype=np.uint8, mode="r")
        start = int(info.get("offset", 0))
        length = int(info.get("length", files[location].size - start))
        tensor.raw_data = files[location][start : start + length].tobytes()
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    return model


class Graph:
    """The builder's ONNX graph with helpers to swap initializers and splice in nodes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        # Edits by node index, applied by finish(): nodes to insert after, nodes to replace with.
        self.after: dict[int, list[Any]] = {}
        self.replace: dict[int, list[Any]] = {}
        self._sums: dict[str, str] = {}

    def array(self, name: str) -> NDArray[Any]:
        from onnx import numpy_helper

        return np.asarray(numpy_helper.to_array(self.inits[name]))

    def put(self, name: str, value: NDArray[Any]) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if name in self.inits:
            self.graph.initializer.remove(self.inits[name])
        self.graph.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def block_sums(self, at: int, x: str, k: int) -> str:
        """x [B, S, K] summed per 32-block, [B, S, K/32]; one per input, shared by its users."""
        from onnx import helper

        if x in self._sums:
            return self._sums[x]
        base = f"/gguf_offsets/{len(self._sums)}"
        shape = self.put(f"{base}/shape", np.array([0, 0, k // BLOCK, BLOCK], np.int64))
        axes = self.put(f"{base}/axes", np.array([-1], np.int64))
        self.after.setdefault(at, []).extend(
            [
                helper.make_node("Reshape", [x, shape], [f"{base}/blocks"], name=f"{base}/Reshape"),
                helper.make_node(
                    "ReduceSum",
                    [f"{base}/blocks", axes],
                    [f"{base}/sums"],
                    keepdims=0,
                    name=f"{base}/ReduceSum",
                ),
            ]
        )
        self._sums[x] = f"{base}/sums"
        return self._sums[x]

    def add_offsets(self, at: int, node: Any, offsets: NDArray[np.float32]) -> None:
        """y += (x summed per block) @ offsets^T: the part of Q4_1's w = d*q + m MatMulNBits lacks."""
        from onnx import helper

        sums = self.block_sums(at, node.input[0], offsets.shape[1] * BLOCK)
        table = self.put(f"{node.name}/gguf_offsets", offsets.T.astype(np.float32))
        y = node.output[0]
        main = f"{node.name}/gguf_main"
        node.output[0] = main
        self.after.setdefault(at, []).extend(
            [
                helper.make_node(
                    "MatMul", [sums, table], [f"{main}/offsets"], name=f"{node.name}/OffsetMatMul"
                ),
                helper.make_node(
                    "Add", [main, f"{main}/offsets"], [y], name=f"{node.name}/OffsetAdd"
                ),
            ]
        )

    def finish(self) -> None:
        """Splice inserted nodes into place and drop initializers nothing uses any more."""
        nodes = list(self.graph.node)
        ordered = []
        for i, node in enumerate(nodes):
            ordered.extend(self.replace.get(i, [node]))
            ordered.extend(self.after.get(i, []))
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        used = {name for n in self.graph.node for name in n.input}
        for init in list(self.graph.initializer):
            if init.name not in used:
                self.graph.initializer.remove(init)


def set_attr(node: Any, name: str, value: int) -> None:
    for a in node.attribute:
        if a.name == name:
            a.i = value
            return
    raise RuntimeError(f"{node.name} has no attribute {name}")


def get_attr(node: Any, name: str) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    raise RuntimeError(f"{node.name} has no attribute {name}")

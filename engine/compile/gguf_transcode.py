"""Child step `python -m engine.compile.gguf_transcode`: a GGUF's own blocks into a built ONNX model."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.compile.gguf_blocks import BLOCK, EXACT_TYPES, NBitsWeight, concat_rows
from engine.compile.gguf_to_hf import readable_files
from engine.compile.gguf_weights import HFWeights, exact_weight, gguf_field, inspect
from engine.compile.onnx_graph import (
    DATA_FILE,
    MODEL_FILE,
    MS_DOMAIN,
    Graph,
    get_attr,
    load_model,
    set_attr,
)
from engine.compile.reporting import StepReporter, run_as_child

REPORT_FILE = "gguf-import.json"
# A fused projection's rows, in the order the ONNX builder concatenates them.
_FUSED = {
    "qkv_proj": ("q_proj", "k_proj", "v_proj"),
    "gate_up_proj": ("gate_proj", "up_proj"),
}
_SECTION = {"attn": "self_attn", "mlp": "mlp"}
_LAYER_NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul")
# The builder re-quantises to int8 with round-to-nearest: its weights are within ~0.5 % of the
# exact ones. Rows in the wrong order would be off by ~100 %; this bound tells the two apart.
_CROSS_CHECK_REL_ERR = 0.05


# -- the builder's graph -------------------------------------------------------------------------


def node_modules(node_name: str) -> list[str] | None:
    """The HF modules whose weights a builder MatMul node holds, in row order; None if unknown."""
    if node_name.startswith("/lm_head/MatMul"):
        return ["lm_head"]
    m = _LAYER_NODE.match(node_name)
    if m is None:
        return None
    layer, section, proj = m.groups()
    prefix = f"model.layers.{layer}.{_SECTION[section]}"
    return [f"{prefix}.{p}" for p in _FUSED.get(proj, (proj,))]


@dataclass
class Rewrite:
    """What the transcode did, for the report."""

    exact: Counter[str] = field(default_factory=Counter)
    requantized: Counter[str] = field(default_factory=Counter)
    requantized_nodes: list[str] = field(default_factory=list)
    offset_nodes: int = 0
    fused_nodes: int = 0
    embedding: str = ""
    lm_head: str = ""


def _cross_check(graph: Graph, node: Any, weight: NBitsWeight) -> None:
    """The builder's own (re-quantised) weight must be close: proves the rows are where it put them."""
    if len([i for i in node.input if i]) != 3:
        raise RuntimeError(f"{node.name} has zero points; the base model must be a symmetric build")
    built = NBitsWeight(
        get_attr(node, "bits"),
        graph.array(node.input[1]).reshape(weight.rows, weight.cols // BLOCK, -1),
        graph.array(node.input[2]).reshape(weight.rows, -1).astype(np.float32),
    )
    exact = weight.dequantize()
    size = max(float(np.linalg.norm(exact)), 1e-30)
    err = float(np.linalg.norm(built.dequantize() - exact)) / size
    if err > _CROSS_CHECK_REL_ERR:
        raise RuntimeError(
            f"the GGUF weights for {node.name} differ from the builder's by {err:.1%}: the node does "
            "not hold the tensors this importer thinks it does"
        )


def _gguf_name(tensor_map: Any, module: str, tensors: dict[str, Any]) -> str | None:
    name = tensor_map.get_name(module)
    if name is None:
        return None
    if module == "lm_head" and f"{name}.weight" not in tensors:
        name = tensor_map.get_name("model.embed_tokens")  # tied embeddings: one tensor for both
    return f"{name}.weight" if name and f"{name}.weight" in tensors else None


def rewrite_matmuls(
    graph: Graph, reader: Any, hf: HFWeights, requantize: bool, report: StepReporter
) -> Rewrite:
    """Every MatMulNBits the GGUF has exact blocks for gets them; the others keep the builder's."""
    import gguf as gguf_lib

    arch = {v: k for k, v in gguf_lib.MODEL_ARCH_NAMES.items()}.get(
        gguf_field(reader, "general.architecture")
    )
    if arch is None:
        raise ValueError(
            f"gguf does not know the architecture {gguf_field(reader, 'general.architecture')!r}"
        )
    layers = int(hf.config.get("num_hidden_layers") or 0)
    tensor_map = gguf_lib.get_tensor_name_map(arch, layers)
    tensors = {t.name: t for t in reader.tensors}
    done = Rewrite()
    matmuls = [(i, n) for i, n in enumerate(graph.graph.node) if n.op_type == "MatMulNBits"]
    # Exact nodes grouped by what they read: projections of one input (gate and up) become one.
    groups: dict[tuple[Any, ...], list[tuple[int, Any, NBitsWeight, list[str]]]] = {}
    for count, (at, node) in enumerate(matmuls):
        if count % 16 == 0:
            report.progress(
                0.1 + 0.6 * count / len(matmuls),
                f"Writing GGUF blocks ({count} of {len(matmuls)} matrices)",
            )
        modules = node_modules(node.name) or []
        names = [_gguf_name(tensor_map, m, tensors) for m in modules]
        qtypes = [tensors[n].tensor_type.name for n in names if n]
        if not modules or None in names or any(q not in EXACT_TYPES for q in qtypes):
            why = ", ".join(qtypes) if modules and None not in names else "no GGUF tensor"
            if not requantize:
                raise ValueError(
                    f"{node.name} ({why}) has no exact form; exact import supports "
                    f"{', '.join(EXACT_TYPES)}. Allow int8 re-quantisation to import it anyway."
                )
            for q in qtypes or ["unmapped"]:
                done.requantized[q] += 1
            done.requantized_nodes.append(f"{node.name} ({why})")
            continue
        parts = [
            exact_weight(tensors[n], hf, f"{m}.weight")
            for m, n in zip(modules, names, strict=True)
            if n
        ]
        weight = concat_rows(parts)
        if (get_attr(node, "N"), get_attr(node, "K")) != (weight.rows, weight.cols):
            raise RuntimeError(
                f"{node.name} is {get_attr(node, 'N')}x{get_attr(node, 'K')}, "
                f"the GGUF weights {weight.rows}x{weight.cols}"
            )
        _cross_check(graph, node, weight)
        for q in qtypes:
            done.exact[q] += 1
        if modules == ["lm_head"]:
            done.lm_head = f"{'+'.join(dict.fromkeys(qtypes))} as {weight.bits}-bit MatMulNBits"
            _write(graph, at, node, weight, qtypes, done)
            continue
        key = (node.input[0], weight.cols, weight.bits, get_attr(node, "accuracy_level"))
        groups.setdefault(key, []).append((at, node, weight, qtypes))
    for group in groups.values():
        if len(group) == 1:
            at, node, weight, qtypes = group[0]
            _write(graph, at, node, weight, qtypes, done)
        else:
            _write_fused(graph, group, done)
    return done


def _write(
    graph: Graph,
    at: int,
    node: Any,
    weight: NBitsWeight,
    qtypes: list[str],
    done: Rewrite,
    stem: str | None = None,
) -> None:
    """Point `node` at the GGUF blocks (and add the offset branch if the blocks have offsets)."""
    stem = stem or node.input[1].rsplit("_", 1)[0]  # "….MatMul.weight" of "….MatMul.weight_Q8"
    label = "+".join(dict.fromkeys(qtypes))
    node.input[1] = graph.put(f"{stem}_gguf_{label}", weight.packed)
    node.input[2] = graph.put(f"{stem}_gguf_{label}_scales", weight.scales)
    set_attr(node, "bits", weight.bits)
    set_attr(node, "N", weight.rows)
    if weight.offsets is not None and np.any(weight.offsets):
        graph.add_offsets(at, node, weight.offsets)
        done.offset_nodes += 1


def _write_fused(
    graph: Graph, group: list[tuple[int, Any, NBitsWeight, list[str]]], done: Rewrite
) -> None:
    """Several projections of one input as one MatMulNBits whose output is split back apart.

    Fewer, larger kernels and one offset branch instead of several: ~5 % faster decoding for
    SmolLM2's gate/up pair, with the same numbers.
    """
    from onnx import NodeProto, helper

    at, first = group[0][0], group[0][1]
    fused = NodeProto()
    fused.CopyFrom(first)
    names = [n.name.rsplit("/", 2)[-2] for _, n, _, _ in group]
    fused.name = f"{first.name.rsplit('/', 2)[0]}/{'+'.join(names)}/MatMulNBits"
    del fused.output[:]
    fused.output.append(f"{fused.name}/output_0")
    weight = concat_rows([w for _, _, w, _ in group])
    qtypes = [q for _, _, _, qs in group for q in qs]
    stem = first.input[1].rsplit("_", 1)[0].replace(f".{names[0]}.", f".{'+'.join(names)}.")
    _write(graph, at, fused, weight, qtypes, done, stem)
    sizes = graph.put(f"{fused.name}/split", np.array([w.rows for _, _, w, _ in group], np.int64))
    split = helper.make_node(
        "Split",
        [f"{fused.name}/output_0", sizes],
        [n.output[0] for _, n, _, _ in group],
        axis=-1,
        name=f"{fused.name}/Split",
    )
    graph.replace[at] = [fused]
    graph.after.setdefault(at, []).append(split)
    for other_at, _, _, _ in group[1:]:
        graph.replace[other_at] = []
    done.fused_nodes += len(group)


def rewrite_embedding(graph: Graph, reader: Any, hf: HFWeights, done: Rewrite) -> None:
    """Q8_0 / Q4_0 embeddings as GatherBlockQuantized (sharing lm_head's blocks when tied)."""
    from onnx import helper

    gather = next(
        (
            n
            for n in graph.graph.node
            if n.op_type == "Gather" and n.input[0] == "model.embed_tokens.weight"
        ),
        None,
    )
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if gather is None or embed is None:
        done.embedding = "as built"
        return
    qtype = embed.tensor_type.name
    if qtype not in ("Q8_0", "Q4_0"):
        # The builder's float32 table is the dequantised GGUF tensor: already exact, only larger.
        done.embedding = f"{qtype} dequantised to a float32 Gather (exact)"
        return
    weight = exact_weight(embed, hf, "model.embed_tokens.weight")
    vocab, row_bytes = weight.rows, weight.packed.shape[1] * weight.packed.shape[2]
    lm = next((n for n in graph.graph.node if n.name.startswith("/lm_head/MatMul")), None)
    shared = (
        lm is not None
        and lm.op_type == "MatMulNBits"
        and get_attr(lm, "bits") == weight.bits
        and lm.input[1] in graph.inits
        and graph.inits[lm.input[1]].dims[:1] == [vocab]
        and np.array_equal(
            graph.array(lm.input[1]).reshape(vocab, -1), weight.packed.reshape(vocab, -1)
        )
        and np.array_equal(graph.array(lm.input[2]).reshape(vocab, -1), weight.scales)
    )
    nodes = []
    if shared:
        assert lm is not None
        shape = graph.put("/gguf_embedding/shape", np.array([vocab, row_bytes], np.int64))
        data, scales = "/gguf_embedding/data", lm.input[2]
        nodes.append(
            helper.make_node(
                "Reshape", [lm.input[1], shape], [data], name="/gguf_embedding/Reshape"
            )
        )
    else:
        data = graph.put(
            f"model.embed_tokens.weight_gguf_{qtype}", weight.packed.reshape(vocab, row_bytes)
        )
        scales = graph.put(f"model.embed_tokens.weight_gguf_{qtype}_scales", weight.scales)
    nodes.append(
        helper.make_node(
            "GatherBlockQuantized",
            [data, gather.input[1], scales],
            list(gather.output),
            name="/model/embed_tokens/GatherBlockQuantized",
            domain=MS_DOMAIN,
            bits=weight.bits,
            block_size=BLOCK,
            gather_axis=0,
            quantize_axis=1,
        )
    )
    graph.replace[list(graph.graph.node).index(gather)] = nodes
    done.embedding = f"{qtype} as {weight.bits}-bit GatherBlockQuantized" + (
        " (shares lm_head's blocks)" if shared else ""
    )


def transcode(
    gguf: Path, hf_dir: Path, base: Path, out: Path, *, requantize: bool, report: StepReporter
) -> dict[str, Any]:
    """Write `base` (an int8 builder model of `hf_dir`) into `out` with the GGUF's own blocks."""
    report.progress(0.01, "Reading the GGUF file")
    import gguf as gguf_lib
    import onnx

    reader = gguf_lib.GGUFReader(str(gguf))
    hf = HFWeights(hf_dir)
    report.progress(0.04, "Loading the built ONNX model")
    model = load_model(base)
    graph = Graph(model)
    done = rewrite_matmuls(graph, reader, hf, requantize, report)
    report.progress(0.72, "Writing the embedding")
    rewrite_embedding(graph, reader, hf, done)
    graph.finish()
    report.progress(0.76, "Saving the ONNX model")
    out.mkdir(parents=True, exist_ok=True)
    for path in base.iterdir():
        if path.is_file() and path.name not in (MODEL_FILE, DATA_FILE, REPORT_FILE):
            shutil.copy2(path, out / path.name)
    onnx.save_model(
        model,
        str(out / MODEL_FILE),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=DATA_FILE,
        size_threshold=1024,
    )
    del model, graph
    readable_files(out)
    report.progress(0.92, "Checking that onnxruntime-genai loads the model")
    import onnxruntime_genai as og

    og.Model(str(out))
    details: dict[str, Any] = {
        "gguf": str(gguf),
        "architecture": gguf_field(reader, "general.architecture"),
        "exact": dict(done.exact),
        "requantized": dict(done.requantized),
        "requantized_nodes": done.requantized_nodes,
        "offset_nodes": done.offset_nodes,
        "fused_nodes": done.fused_nodes,
        "embedding": done.embedding,
        "lm_head": done.lm_head or "as built",
    }
    (out / REPORT_FILE).write_text(json.dumps(details, indent=2) + "\n", encoding="utf-8")
    report.progress(1.0, "GGUF blocks written")
    return details


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m engine.compile.gguf_transcode")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("inspect").add_argument("gguf", type=Path)
    run = sub.add_parser("transcode")
    run.add_argument("--gguf", required=True, type=Path)
    run.add_argument("--hf", required=True, type=Path)
    run.add_argument("--base", required=True, type=Path)
    run.add_argument("--out", required=True, type=Path)
    run.add_argument("--no-requantize", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)

    def body(report: StepReporter) -> dict[str, Any]:
        if args.command == "inspect":
            return inspect(args.gguf.resolve())
        return transcode(
            args.gguf.resolve(),
            args.hf.resolve(),
            args.base.resolve(),
            args.out.resolve(),
            requantize=not args.no_requantize,
            report=report,
        )

    return run_as_child(body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

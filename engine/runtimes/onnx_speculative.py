"""Speculative decoding from a predicted output (OpenAI's Predicted Outputs) for an ONNX model.

A request may carry the text its answer will probably repeat (the selection an edit rewrites).
Its tokens are drafts: the worker runs the newest token and up to `k` drafts through the model in
one forward pass, keeps the drafts the model would have chosen itself, and takes the model's own
token where they part. Greedy output stays token-for-token the output without a prediction.

That last point needs care with this runtime. GroupQueryAttention computes several new tokens
with other kernels than one (measured on the default model: 3e-8 apart in the first layer's
attention, amplified by MatMulNBits' int8 activation quantization to ~0.6 of a logit at the
output, which changed the greedy text after 7-95 tokens on four prompts). MatMulNBits and the
norms give each row the same bits whatever the number of rows. So the verifying graph
(`verify_model`) is the model's own graph with every attention node split into one node per new
token, each appending a single position in place as a decode step does, and the logits kept for
every new position (the builder prunes them to the last); everything else runs once for all the
tokens. With that graph the drafted text is identical (tests compare token for token).
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _verify_tokens() -> int:
    """Tokens one verifying pass takes: the newest token and up to VERIFY_TOKENS - 1 drafts.
    The graph has a fixed number of attention nodes, so a pass with fewer drafts is padded (its
    extra positions are written past the row's length and never read). On two cores a pass of
    5 cost 1.3-1.9x a decode step, one of 8 1.5-2.3x (docs/performance.md): 8 gives more to a
    rewrite that keeps the code, and a prediction that misses costs few passes anyway (the
    Drafter backs off). INGOT_VERIFY_WIDTH overrides (2-16; not *_TOKENS: the worker's
    environment drops names that look like secrets)."""
    try:
        return max(2, min(16, int(os.environ.get("INGOT_VERIFY_WIDTH", "8"))))
    except ValueError:
        return 8


VERIFY_TOKENS = _verify_tokens()
# Input of the verifying graph: where the logits start (-n: the last n positions).
LOGITS_FROM = "ingot_logits_from"
# Intermediate KV outputs of the split attention: bound to the same memory as the layer's
# past/present buffer, so each per-token node appends in place.
_STEP_K = "/ingot_spec{j}/present_key"
_STEP_V = "/ingot_spec{j}/present_value"


def verify_model(folder: Path, filename: str, steps: int) -> tuple[bytes, dict[str, str]] | None:
    """The model's graph rewritten to verify `steps` tokens at once (see the module doc), as
    serialized ONNX whose external data stays in `folder`, and its intermediate KV outputs,
    each with the past input whose buffer it must be bound to; None if this graph is not one
    this rewrite understands (then requests decode without drafts)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(folder / filename), load_external_data=False)
    graph = model.graph
    logits = next((o for o in graph.output if o.name == "logits"), None)
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.name.endswith("prune/Gather")]
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    if logits is None or len(gathers) != 1 or not attention:
        return None
    gather = gathers[0]
    unsqueeze = next(
        (n for n in graph.node if n.op_type == "Unsqueeze" and gather.output[0] in n.input), None
    )
    if unsqueeze is None or any(a.input[1] or a.input[2] for a in attention):
        return None  # not the builder's pruned head, or unpacked q/k/v
    # Logits for every position the head runs on (declared before outputs are appended below).
    for info in [v for v in graph.value_info if v.name in ("logits", unsqueeze.output[0])]:
        graph.value_info.remove(info)
    dim = logits.type.tensor_type.shape.dim[1]
    dim.ClearField("dim_value")
    dim.dim_param = "logits_length"
    consts: dict[str, np.ndarray[Any, Any]] = {
        "ingot_end": np.array([2**62], np.int64),
        "ingot_axis": np.array([1], np.int64),
        **{f"ingot_at{j}": np.array([j], np.int64) for j in range(steps + 1)},
        **{f"ingot_back{j}": np.array(steps - 1 - j, np.int32) for j in range(steps)},
    }
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in consts.items())
    graph.input.append(helper.make_tensor_value_info(LOGITS_FROM, TensorProto.INT64, [1]))
    nodes: list[Any] = []
    aliases: dict[str, str] = {}
    for node in graph.node:
        if node is gather:  # the head runs on the last -LOGITS_FROM positions, not just one
            hidden = gather.input[0]
            ins = [hidden, LOGITS_FROM, "ingot_end", "ingot_axis"]
            nodes.append(helper.make_node("Slice", ins, [unsqueeze.output[0]], name="ingot_head"))
        elif node is unsqueeze:
            continue
        elif node.op_type == "GroupQueryAttention":
            nodes.extend(_split_attention(node, steps, graph, aliases))
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return bytes(model.SerializeToString()), {k: v for k, v in aliases.items() if v}


def _split_attention(node: Any, steps: int, graph: Any, aliases: dict[str, str]) -> list[Any]:
    """One attention node per new token: token j attends to the past and tokens < j, exactly
    as the decode step that would have computed it alone."""
    from onnx import helper

    q, _, _, past_k, past_v, seqlens, total = list(node.input[:7])
    rest = list(node.input[7:])
    out, present_k, present_v = node.output
    nodes: list[Any] = []
    outs: list[str] = []
    aliases.update({present_k: past_k, present_v: past_v})
    for j in range(steps):
        name = f"{node.name}/ingot_spec{j}"
        last = j == steps - 1
        step_k = present_k if last else node.name + _STEP_K.format(j=j)
        step_v = present_v if last else node.name + _STEP_V.format(j=j)
        ins = [q, f"ingot_at{j}", f"ingot_at{j + 1}", "ingot_axis"]
        nodes.append(helper.make_node("Slice", ins, [name + "/q"]))
        # Every layer takes the same lengths: computed once per token, by the first layer.
        lens = f"ingot_lens{j}/{seqlens}", f"ingot_total{j}/{total}"
        if lens[0] not in aliases:
            aliases[lens[0]] = aliases[lens[1]] = ""  # (not outputs: just seen)
            nodes.append(helper.make_node("Sub", [seqlens, f"ingot_back{j}"], [lens[0]]))
            nodes.append(helper.make_node("Sub", [total, f"ingot_back{j}"], [lens[1]]))
        att = helper.make_node(
            "GroupQueryAttention",
            [name + "/q", "", "", past_k, past_v, *lens, *rest],
            [name + "/out", step_k, step_v],
            name=name,
            domain=node.domain,
        )
        att.attribute.extend(node.attribute)
        nodes.append(att)
        if not last:  # a graph output, so the caller can bind it to the shared buffer
            graph.output.append(helper.make_empty_tensor_value_info(step_k))
            graph.output.append(helper.make_empty_tensor_value_info(step_v))
            aliases.update({step_k: node.input[3], step_v: node.input[4]})
        past_k, past_v = step_k, step_v
        outs.append(name + "/out")
    nodes.append(helper.make_node("Concat", outs, [out], axis=1))
    return nodes


class Drafter:
    """Draft tokens for one sequence from a source token list (the tokenized prediction).

    It keeps a position in the source: the token the output is expected to produce next. While
    drafts are accepted the position moves along; when the output departs from the source the
    drafter is lost until the last NGRAM tokens produced occur in the source again (an edit
    that rewrites a line and then goes on with the rest of the code), and proposes nothing
    meanwhile. Passes in a row with no draft accepted make it wait longer and longer (4, 8, ...
    up to 64 tokens) before drafting again, so a useless prediction costs few verifying passes
    (each costs more than a decode step: see VERIFY_TOKENS)."""

    NGRAM = 3
    # Passes in a row with nothing accepted before the drafter starts backing off.
    MAX_MISSES = 2
    MAX_BACKOFF = 64

    def __init__(self, source: list[int], max_draft: int) -> None:
        self.source = source
        self.max_draft = max(0, max_draft)
        self.pos: int | None = 0 if source and self.max_draft else None
        self.misses = 0
        self.cooldown = 0
        self.accepted = 0
        self.rejected = 0
        self._index: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i in range(len(source) - self.NGRAM + 1):
            self._index[tuple(source[i : i + self.NGRAM])].append(i + self.NGRAM)
        self._tail: list[int] = []
        self._last = 0  # where the output last was in the source

    def propose(self, limit: int) -> list[int]:
        """Up to `limit` drafts for the next pass (none when lost, backing off or at the end)."""
        if self.pos is None or limit <= 0 or self.cooldown > 0:
            return []
        return self.source[self.pos : self.pos + min(self.max_draft, limit)]

    def update(self, drafts: list[int], produced: list[int]) -> None:
        """After a step: `drafts` were proposed, `produced` are the tokens it emitted (the
        accepted drafts, then the model's own token)."""
        self.cooldown = max(0, self.cooldown - len(produced))
        if drafts:
            taken = len(produced) - 1
            self.accepted += taken
            self.rejected += len(drafts) - taken
            if taken:
                self.misses = 0
            else:
                self.misses += 1
                if self.misses >= self.MAX_MISSES:
                    self.cooldown = min(self.MAX_BACKOFF, 4 << (self.misses - self.MAX_MISSES))
        self._tail = (self._tail + produced)[-self.NGRAM :]
        if self.pos is not None and self.source[self.pos : self.pos + len(produced)] == produced:
            self.pos += len(produced)
            self._last = self.pos
            if self.pos >= len(self.source):
                self.pos = None
            return
        self.pos = self._resync()

    def _resync(self) -> int | None:
        """The source position after an occurrence of the last NGRAM tokens produced (the first
        one past where the output last was: an edit moves forward through its source); None if
        they occur nowhere, or only at the very end."""
        if len(self._tail) < self.NGRAM:
            return None
        hits = [h for h in self._index.get(tuple(self._tail), ()) if h < len(self.source)]
        if not hits:
            return None
        return next((h for h in hits if h >= self._last), hits[0])

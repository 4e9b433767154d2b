"""`ingot embed`: vectors for texts (arguments, or one per line on stdin) from an embedding model."""

from __future__ import annotations

import argparse
import math
import sys

from server.cli.client import CliError
from server.cli.context import CliContext
from server.cli.render import note, print_json, say

# With a few inputs, text output also shows how similar they are to each other.
MAX_SIMILARITY_INPUTS = 8
PREVIEW = 4


def _texts(args: argparse.Namespace) -> list[str]:
    if args.text:
        return list(args.text)
    if sys.stdin.isatty():
        raise CliError(
            "There is nothing to embed.",
            hint='Pass texts as arguments (`ingot embed all-minilm-l6-v2 "some text"`) or pipe '
            "them in, one per line.",
            exit_code=2,
        )
    lines = [line.rstrip("\n") for line in sys.stdin]
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise CliError(
            "Standard input was empty: there is nothing to embed.",
            hint="Pipe in one text per line.",
            exit_code=2,
        )
    return texts


def _cos(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def embed(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc.embeddings import EmbedParams
    from server.cli.model_cmd import download_model

    texts = _texts(args)
    mi = download_model(ctx, args.model, quiet_if_cached=True)
    client = ctx.client()
    params = EmbedParams(
        model=mi.id,
        input=texts,
        encoding_format="base64" if args.base64 else "float",
        truncate=args.truncate,
        ttl=args.ttl,
    )
    res = ctx.run(client.embed(params))
    if ctx.json:
        print_json(res)
        return 0
    if args.base64:
        for vector in res.embeddings:
            say(str(vector))
        return 0
    ms = res.telemetry.total_ms
    note(
        f"{res.model}: {len(res.embeddings)} vectors of {res.dimensions} dimensions, "
        f"{res.prompt_tokens} tokens, {ms:.0f} ms"
    )
    vectors = [v for v in res.embeddings if isinstance(v, list)]
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        head = ", ".join(f"{x:+.4f}" for x in vector[:PREVIEW])
        short = text if len(text) <= 40 else text[:39] + "…"
        say(f"[{i}] [{head}, …]  {short!r}")
    if 2 <= len(vectors) <= MAX_SIMILARITY_INPUTS:
        say("cosine similarity:")
        for i, a in enumerate(vectors):
            say(f"[{i}] " + "  ".join(f"{_cos(a, b):.3f}" for b in vectors))
    return 0

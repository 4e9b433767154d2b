"""`ingot cache list|location|cd|verify` and `ingot hardware`."""

from __future__ import annotations

import argparse
from pathlib import Path

from server.cli.client import CliError
from server.cli.context import CliContext
from server.cli.model_cmd import fit_text
from server.cli.render import (
    human_bytes,
    note,
    plural,
    print_fields,
    print_json,
    print_table,
    say,
    when,
)


def cache_list(ctx: CliContext, args: argparse.Namespace) -> int:
    info = ctx.run(ctx.client().cache_info())
    if ctx.json:
        print_json(info)
        return 0
    if not info.entries:
        say(f"The cache at {info.path} is empty.")
        note("`ingot model download <model>` fills it; `ingot model list` shows the catalog.")
        return 0
    rows = [
        [e.id, human_bytes(e.size_bytes), when(e.created_at), e.source, e.path]
        for e in info.entries
    ]
    print_table(["ID", "SIZE", "ADDED", "SOURCE", "PATH"], rows, right=("SIZE",))
    note(
        f"{plural(info.models, 'model')}, {human_bytes(info.size_bytes)} in {info.path}; "
        f"{human_bytes(info.free_bytes)} free on that disk."
    )
    return 0


def cache_location(ctx: CliContext, args: argparse.Namespace) -> int:
    from engine.bootstrap import cache_root
    from engine.config import EngineConfig

    # Read where the cache is without starting an engine: this must stay instant.
    path = cache_root(EngineConfig.from_env(home=ctx.home))
    if ctx.json:
        print_json({"path": str(path)})
    else:
        say(str(path))
    return 0


def cache_cd(ctx: CliContext, args: argparse.Namespace) -> int:
    dest = Path(args.folder).expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise CliError(f"{dest} is a file, not a folder.", hint="Choose a folder for the cache.")
    info = ctx.run(ctx.client().cache_move(str(dest)))
    if ctx.json:
        print_json(info)
    else:
        say(f"The cache is now at {info.path} ({plural(info.models, 'model')}).")
    return 0


def cache_verify(ctx: CliContext, args: argparse.Namespace) -> int:
    res = ctx.run(ctx.client().cache_verify(args.model))
    if ctx.json:
        print_json(res)
        return 0 if res.ok else 1
    if not res.problems:
        say("Nothing to verify: the cache is empty.")
        return 0
    for model_id, problems in sorted(res.problems.items()):
        if problems:
            say(f"{model_id}: {len(problems)} problem(s)")
            for p in problems:
                say(f"  {p}")
        else:
            say(f"{model_id}: ok")
    if not res.ok:
        raise CliError(
            "Some cached files do not match their checksums.",
            hint="Remove the damaged models (`ingot model remove <model>`) and download them again.",
        )
    return 0


def hardware(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc import models as m

    client = ctx.client()
    hw = ctx.run(client.hardware())
    models = ctx.run(client.catalog(m.CatalogListParams(include_all=True))).models
    if ctx.json:
        print_json({"hardware": hw, "models": models})
        return 0
    pairs = [
        ("cpu", f"{hw.cpu_model} ({hw.cpu_cores_physical} cores, {hw.cpu_cores_logical} threads)"),
        ("ram", f"{human_bytes(hw.ram_total)} ({human_bytes(hw.ram_available)} available)"),
        ("os", hw.os),
        ("devices", ", ".join(hw.devices)),
        ("execution providers", ", ".join(hw.execution_providers) or "none"),
    ]
    for g in hw.gpus:
        extra = f", driver {g.driver_version}" if g.driver_version else ""
        extra += f", CUDA {g.cuda_version}" if g.cuda_version else ""
        pairs.append(
            (
                f"gpu {g.index}",
                f"{g.name} ({human_bytes(g.memory_free)} free of "
                f"{human_bytes(g.memory_total)}{extra})",
            )
        )
    if not hw.gpus:
        pairs.append(("gpu", f"none ({hw.nvml_error})" if hw.nvml_error else "none"))
    print_fields(pairs, title="This machine")
    say("")
    rows = [[mi.alias, mi.id, mi.device, mi.runtime, fit_text(mi)] for mi in models]
    print_table(["ALIAS", "ID", "DEVICE", "RUNTIME", "RUNS HERE"], rows, title="What can run here")
    return 0

"""`ingot model list|info|download|load|unload|remove|register|compile|import|verify`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from server.cli.client import CliError, Interrupted
from server.cli.context import CliContext
from server.cli.progress import ProgressView
from server.cli.render import (
    human_bytes,
    human_duration,
    human_tokens,
    note,
    print_fields,
    print_json,
    print_table,
    say,
)

if TYPE_CHECKING:
    from protocol.jsonrpc import models as m

FILTER_KEYS = ("device", "task", "runtime")
TASK_SHORT = {"chat": "chat-completion"}


def parse_filters(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or key not in FILTER_KEYS or not value:
            raise CliError(
                f"'{item}' is not a filter.",
                hint="Use device=cpu|cuda, task=chat|embeddings or runtime=onnx|vllm|remote.",
                exit_code=2,
            )
        out[key] = value
    if out.get("device") not in (None, "cpu", "cuda"):
        raise CliError(f"Unknown device '{out['device']}'.", hint="Use cpu or cuda.", exit_code=2)
    if "task" in out:
        out["task"] = TASK_SHORT.get(out["task"], out["task"])
    return out


def is_remote(mi: m.ModelInfo) -> bool:
    """Served by an attached deployment (`ingot model attach`): shown as runtime `remote`."""
    return mi.source.startswith("remote:")


def device_text(mi: m.ModelInfo) -> str:
    return "remote" if is_remote(mi) else mi.device


def runtime_text(mi: m.ModelInfo) -> str:
    return "remote" if is_remote(mi) else mi.runtime


def loaded_text(mi: m.ModelInfo) -> str:
    if mi.loading:
        return "loading"
    if not mi.loaded:
        return "-"
    if mi.active_requests:
        return f"yes, {mi.active_requests} running"
    if mi.ttl_seconds is not None and mi.ttl_seconds < 0:
        return "yes, kept"
    if mi.expires_in_seconds is not None:
        return f"yes, {human_duration(mi.expires_in_seconds)} left"
    return "yes"


def fit_text(mi: m.ModelInfo) -> str:
    # The hardware first (no GPU says more than a missing CUDA runtime), then the runtime, then
    # the memory free right now.
    if not mi.offered:
        return f"no: {mi.fit_reason}"
    if mi.runtime_unavailable:
        return f"no: {mi.runtime_unavailable}"
    if not mi.fits:
        return f"no: {mi.fit_reason}"
    return "yes"


def list_models(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc import models as m

    filters = parse_filters(args.filter)
    only_remote = filters.get("runtime") == "remote"
    params = m.CatalogListParams(
        device=filters.get("device"),  # checked by parse_filters
        task=filters.get("task"),
        runtime=None if only_remote else filters.get("runtime"),
        cached_only=args.cached,
        include_all=args.all,
    )
    client = ctx.client()
    result = ctx.run(client.catalog(params))
    if only_remote:
        result = m.CatalogListResult(models=[mi for mi in result.models if is_remote(mi)])
    if ctx.json:
        print_json(result)
        return 0
    if not result.models:
        note("No models match." + ("" if args.all else " `--all` also shows what cannot run here."))
        return 0
    rows = [
        [
            mi.alias,
            mi.id,
            device_text(mi),
            runtime_text(mi),
            human_bytes(mi.size_bytes),
            human_tokens(mi.context_length),
            "yes" if mi.cached else "-",
            loaded_text(mi),
            fit_text(mi),
        ]
        for mi in result.models
    ]
    cols = ["ALIAS", "ID", "DEVICE", "RUNTIME", "SIZE", "CONTEXT", "CACHED", "LOADED", "FITS"]
    print_table(cols, rows, right=("SIZE", "CONTEXT"))
    return 0


def info_fields(mi: m.ModelInfo) -> list[tuple[str, str]]:
    caps = [k for k in ("chat", "tools", "json_schema", "fim") if getattr(mi.capabilities, k)]
    pairs = [
        ("id", mi.id),
        ("alias", mi.alias),
        ("name", mi.display_name),
        ("publisher", mi.publisher),
        ("task", mi.task),
        ("device", device_text(mi)),
        ("runtime", f"{runtime_text(mi)} ({mi.framework})"),
        ("source", mi.source),
        ("size", human_bytes(mi.size_bytes)),
        ("context", f"{mi.context_length} tokens"),
        ("max output", f"{mi.max_output_tokens} tokens"),
        ("capabilities", ", ".join(caps) or "-"),
        ("license", mi.license + (f" ({mi.license_url})" if mi.license_url else "")),
        ("cached", f"yes, {mi.path}" if mi.cached else "no"),
        ("loaded", loaded_text(mi)),
        ("memory needed", human_bytes(mi.memory_needed_bytes)),
        (
            "fits",
            fit_text(mi) if not mi.fits or mi.runtime_unavailable else f"yes, {mi.fit_reason}",
        ),
    ]
    if mi.loaded and mi.memory_bytes:
        pairs.append(("memory used", human_bytes(mi.memory_bytes)))
    plan = (mi.runtime_info or {}).get("plan")
    if isinstance(plan, dict) and plan.get("notes"):
        # Why the vLLM server got the memory it has (shared or dedicated GPU, capped context).
        pairs.append(("vLLM plan", "; ".join(str(n) for n in plan["notes"])))
    if mi.registered:
        pairs.append(("registered", "yes (your own model)"))
    if mi.description:
        pairs.append(("description", mi.description))
    return pairs


def license_text(mi: m.ModelInfo) -> str | None:
    if not mi.path:
        return None
    folder = Path(mi.path)
    for name in ("LICENSE", "LICENSE.txt", "LICENSE.md", "license.txt", "LICENCE"):
        f = folder / name
        if f.is_file():
            return f.read_text(encoding="utf-8", errors="replace")
    return None


def info(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client()
    mi = ctx.run(client.model_info(args.model))
    if args.license:
        text = license_text(mi)
        if ctx.json:
            print_json(
                {"id": mi.id, "license": mi.license, "licenseUrl": mi.license_url, "text": text}
            )
            return 0
        print_fields([("id", mi.id), ("license", mi.license), ("url", mi.license_url or "-")])
        if text:
            say("")
            say(text.rstrip())
        elif not mi.cached:
            note(f"The license text comes with the files: `ingot model download {mi.id}`.")
        return 0
    if ctx.json:
        print_json(mi)
        return 0
    print_fields(info_fields(mi))
    return 0


def download_model(ctx: CliContext, model: str, *, quiet_if_cached: bool = False) -> m.ModelInfo:
    """Download (and build) with progress on stderr; Ctrl-C cancels, keeping what was fetched."""
    client = ctx.client()
    mi = ctx.run(client.model_info(model))
    if mi.cached:
        if not quiet_if_cached:
            note(f"{mi.id} is already downloaded ({mi.path}).")
        return mi
    if mi.build is None:
        how = f"downloading it from {mi.source}"
    elif mi.source == "build":  # made from another variant (the chain is in the catalog)
        how = "building it on this machine"
    else:
        how = f"building it on this machine from {mi.source}"
    note(f"{mi.id} is not in the cache yet: {how} ({human_bytes(mi.size_bytes)}).")
    with ProgressView(f"Downloading {mi.id}") as view:
        try:
            return ctx.run(client.download(mi.id, view))
        except KeyboardInterrupt:
            view.close()
            raise Interrupted(
                f"Download of {mi.id} cancelled; what was downloaded is kept.",
                hint=f"Run `ingot model download {model}` again to resume.",
            ) from None


def download(ctx: CliContext, args: argparse.Namespace) -> int:
    mi = download_model(ctx, args.model)
    if ctx.json:
        print_json(mi)
    else:
        say(f"{mi.id} is ready ({human_bytes(mi.size_bytes)}, {mi.path}).")
    return 0


def ttl_words(mi: m.ModelInfo) -> str:
    ttl = mi.ttl_seconds
    if ttl is None:
        return ""
    if ttl < 0:
        return "kept until unloaded"
    if ttl == 0:
        return "unloads when its requests finish"
    return f"unloads after {human_duration(ttl)} unused"


def load(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client(need_service=True)
    if sys.stderr.isatty() and not ctx.json:
        note(f"Loading {args.model} in the service at {client.where}...")
    mi = ctx.run(client.load(args.model, args.ttl, lambda _: None))
    if ctx.json:
        print_json(mi)
        return 0
    mem = f", {human_bytes(mi.memory_bytes)}" if mi.memory_bytes else ""
    say(f"Loaded {mi.id} in the service at {client.where}{mem}; {ttl_words(mi)}.")
    return 0


def unload(ctx: CliContext, args: argparse.Namespace) -> int:
    from server.cli.launcher import find_service

    if find_service(ctx.home) is None:
        raise CliError(
            f"{args.model} is not loaded: no Ingot service is running for {ctx.home}.",
            hint="`ingot model load <model>` starts the service and loads a model.",
        )
    client = ctx.client(need_service=True)
    res = ctx.run(client.unload(args.model, args.force))
    if ctx.json:
        print_json(res)
    elif res.unloaded:
        say(f"Unloaded {args.model}.")
    else:
        say(f"{args.model} unloads as soon as its running requests finish (--force stops them).")
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        return True  # scripts and pipes: no one to ask
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def remove(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client()
    mi = ctx.run(client.model_info(args.model))
    if not mi.cached and not mi.registered:
        raise CliError(f"{mi.id} is not in the cache.", hint="`ingot cache list` shows what is.")
    if not args.yes and not _confirm(f"Delete {mi.id} ({human_bytes(mi.size_bytes)})?"):
        note("Nothing deleted.")
        return 1
    res = ctx.run(client.delete(mi.id))
    if ctx.json:
        print_json(res)
    elif mi.registered and mi.source.startswith("local:"):
        say(f"Unregistered {mi.id}; its folder {mi.source[6:]} is untouched.")
    else:
        say(f"Removed {mi.id}." if res.deleted else f"{mi.id} was not in the cache.")
    return 0


def register(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc import models as m

    folder = Path(args.folder).expanduser().resolve()
    if not folder.is_dir():
        raise CliError(
            f"{folder} is not a folder.",
            hint="Point at an ONNX Runtime GenAI model folder (or a Hugging Face folder with "
            "--runtime vllm).",
        )
    params = m.ModelRegisterParams(
        path=str(folder), runtime=args.runtime, name=args.name, alias=args.alias
    )
    client = ctx.client()
    mi = ctx.run(client.register(params))
    if ctx.json:
        print_json(mi)
    else:
        say(f"Registered {mi.id} (alias {mi.alias}) from {folder}.")
        note(f"Try it: ingot model run {mi.alias}")
    return 0


def compile_model(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc import models as m

    source = args.source
    path = Path(source).expanduser()
    if path.exists():
        source = str(path.resolve())
    elif "/" in source or source.lower().endswith(".gguf"):
        # A path that is not there, rather than a catalog name the engine would reject oddly.
        raise CliError(
            f"{path} does not exist.",
            hint="Give a .gguf file, a Hugging Face model folder, or a catalog model in Hugging "
            "Face format (`ingot model list --filter runtime=vllm`).",
        )
    params = m.ModelCompileParams(
        source=source, precision=args.precision, device=args.device, name=args.name
    )
    client = ctx.client()
    with ProgressView(f"Compiling {args.source}") as view:
        try:
            mi = ctx.run(client.compile(params, view))
        except KeyboardInterrupt:
            view.close()
            raise Interrupted(
                "Compile cancelled.", hint="Run the command again to start over."
            ) from None
    if ctx.json:
        print_json(mi)
    else:
        say(f"Compiled {mi.id} ({human_bytes(mi.size_bytes)}, {mi.path}).")
        note(f"Try it: ingot model run {mi.alias}")
    return 0


def import_model(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc import models as m

    path = Path(args.gguf).expanduser()
    if not path.is_file():
        raise CliError(f"{path} does not exist.", hint="Give the path of a .gguf file.")
    params = m.ModelImportParams(path=str(path.resolve()), name=args.name)
    client = ctx.client()
    with ProgressView(f"Importing {path.name}") as view:
        try:
            mi = ctx.run(client.import_gguf(params, view))
        except KeyboardInterrupt:
            view.close()
            raise Interrupted(
                "Import cancelled.", hint="Run the command again to start over."
            ) from None
    if ctx.json:
        print_json(mi)
    else:
        say(f"Imported {mi.id} ({human_bytes(mi.size_bytes)}, {mi.path}).")
        if mi.description:
            note(mi.description)
        note(
            f"Try it: ingot model run {mi.alias}  ·  check it: ingot model verify {mi.alias} --fidelity"
        )
    return 0


def verify_model(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client()
    with ProgressView(f"Measuring the fidelity of {args.model}") as view:
        try:
            res = ctx.run(client.verify_fidelity(args.model, view))
        except KeyboardInterrupt:
            view.close()
            raise Interrupted("Fidelity check cancelled.") from None
    if ctx.json:
        print_json(res)
        return 0 if res.meets_target else 1
    verdict = "meets" if res.meets_target else "MISSES"
    if res.metric == "cosine":
        say(
            f"{res.model}: lowest cosine with the reference {res.min_cosine:.6f} "
            f"({verdict} the target of {res.target})"
        )
        say(
            f"mean cosine {res.mean_cosine:.6f} over {res.sentences} sentences, "
            f"{res.tokens} tokens ({res.seconds:.0f} s)"
        )
        return 0 if res.meets_target else 1
    say(f"{res.model}: mean KL {res.mean_kl:.4f} ({verdict} the target of {res.target})")
    say(
        f"median KL {res.median_kl:.4f}, max {res.max_kl:.3f}, top-1 agreement "
        f"{(res.top1_agreement or 0) * 100:.1f} % over {res.tokens} tokens ({res.seconds:.0f} s)"
    )
    return 0 if res.meets_target else 1

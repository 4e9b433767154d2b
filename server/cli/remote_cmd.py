"""`ingot model attach|detach|remotes`: remote vLLM deployments attached by URL."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from server.cli.client import CliError
from server.cli.context import CliContext
from server.cli.render import human_tokens, note, print_json, print_table, say

if TYPE_CHECKING:
    from protocol.jsonrpc.remotes import RemoteInfo


def _key_from_stdin() -> str:
    """`--api-key -`: the key's first line on stdin, so it shows in no process list."""
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("API key: ").strip()
    return sys.stdin.readline().strip()


def _describe(r: RemoteInfo) -> str:
    where = {"stored": "key stored", "env": f"key from ${r.api_key_env}", "none": "no key"}[r.key]
    return f"{r.name} at {r.url} ({where})"


def attach(ctx: CliContext, args: argparse.Namespace) -> int:
    from protocol.jsonrpc.remotes import RemoteAttachParams

    key = _key_from_stdin() if args.api_key == "-" else args.api_key
    if args.api_key == "-" and not key:
        raise CliError("No API key on stdin.", hint="Pipe the key in, or use --api-key-env.")
    params = RemoteAttachParams(
        url=args.url, api_key=key, api_key_env=args.api_key_env, name=args.name
    )
    client = ctx.client()
    r = ctx.run(client.attach_remote(params))
    if ctx.json:
        print_json(r)
        return 0
    say(f"Attached {_describe(r)}:")
    for mi in r.models:
        say(f"  {mi.name}  ({mi.served_model}, {human_tokens(mi.context_length)} context)")
    if r.models:
        note(f"Try it: ingot model run {r.models[0].name}")
    if not client.remote:
        note("No Ingot service runs: the attachment is saved in the home for the next one.")
    return 0


def detach(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client()
    r = ctx.run(client.detach_remote(args.remote))
    if ctx.json:
        print_json(r)
    else:
        names = ", ".join(mi.name for mi in r.models) or "no models"
        say(f"Detached {r.name} ({r.url}): {names}. Nothing was stopped there.")
    return 0


def remotes(ctx: CliContext, args: argparse.Namespace) -> int:
    client = ctx.client()
    res = ctx.run(client.remotes())
    if ctx.json:
        print_json(res)
        return 0
    if not res.remotes:
        note("No remote deployments are attached (`ingot model attach URL`).")
        return 0
    rows = [
        [
            r.name,
            r.url,
            mi.name,
            mi.served_model,
            human_tokens(mi.context_length),
            ("yes" if mi.loaded else "-") + (f", {mi.health}" if mi.health else ""),
            {"stored": "stored", "env": f"${r.api_key_env}", "none": "-"}[r.key],
        ]
        for r in res.remotes
        for mi in r.models
    ]
    cols = ["REMOTE", "URL", "MODEL", "SERVED AS", "CONTEXT", "LOADED", "KEY"]
    print_table(cols, rows, right=("CONTEXT",))
    return 0

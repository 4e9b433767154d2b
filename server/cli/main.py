"""`ingot`: the command line's entry point — parse, dispatch, report failures.

A failure is one clear line plus a hint (no traceback unless --debug). Command modules are imported
only when they run, so `ingot --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from server.cli.context import CliContext

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class Parser(argparse.ArgumentParser):
    """Usage errors in the house format: `error:` + `hint:` and exit code 2."""

    def error(self, message: str) -> NoReturn:
        from server.cli.render import print_error

        print_error(message, f"`{self.prog} --help` shows the usage.")
        self.exit(EXIT_USAGE)


def _version() -> str:
    from engine.distribution import ingot_version

    return ingot_version()


def _cmd(p: argparse.ArgumentParser, target: str) -> None:
    """`target` is "module:function" under server.cli, imported lazily at dispatch."""
    p.set_defaults(_target=target)


def _json_opt(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        choices=("text", "json"),
        default="text",
        help="json: the same camelCase objects the REST API returns (see docs/cli.md)",
    )


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def _model_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    model = sub.add_parser("model", parents=[common], help="list, fetch, load and run models")
    ms = model.add_subparsers(title="commands", metavar="COMMAND")
    model.set_defaults(_help=model)

    p = ms.add_parser("list", aliases=["ls"], parents=[common], help="the catalog on this machine")
    p.add_argument(
        "--filter",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="device=cpu|cuda, task=chat|embeddings, runtime=onnx|vllm (several may be given)",
    )
    p.add_argument("--all", action="store_true", help="also variants this hardware cannot run")
    p.add_argument("--cached", action="store_true", help="only downloaded models")
    _json_opt(p)
    _cmd(p, "model_cmd:list_models")

    p = ms.add_parser("info", parents=[common], help="everything about one model")
    p.add_argument("model", help="alias, name or id")
    p.add_argument("--license", action="store_true", help="show the license (text if cached)")
    _json_opt(p)
    _cmd(p, "model_cmd:info")

    p = ms.add_parser("download", parents=[common], help="download (and build) into the cache")
    p.add_argument("model")
    _json_opt(p)
    _cmd(p, "model_cmd:download")

    p = ms.add_parser("load", parents=[common], help="load into the service's memory")
    p.add_argument("model")
    p.add_argument(
        "--ttl",
        type=_float,
        metavar="SECONDS",
        help="unload after this long unused (default 600; negative: keep; 0: after each request)",
    )
    _json_opt(p)
    _cmd(p, "model_cmd:load")

    p = ms.add_parser("unload", parents=[common], help="unload from the service's memory")
    p.add_argument("model")
    p.add_argument("--force", action="store_true", help="stop running generations")
    _json_opt(p)
    _cmd(p, "model_cmd:unload")

    p = ms.add_parser("remove", aliases=["rm"], parents=[common], help="delete from the cache")
    p.add_argument("model")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _json_opt(p)
    _cmd(p, "model_cmd:remove")

    p = ms.add_parser("register", parents=[common], help="add your own model folder")
    p.add_argument("folder", help="an ONNX Runtime GenAI folder or a Hugging Face folder")
    p.add_argument("--runtime", choices=("onnx-genai", "vllm"), default="onnx-genai")
    p.add_argument("--name", help="model name (default: the folder's name)")
    p.add_argument("--alias", help="short name (default: the name)")
    _json_opt(p)
    _cmd(p, "model_cmd:register")

    p = ms.add_parser("compile", parents=[common], help="compile a GGUF or HF model to ONNX")
    p.add_argument("source", help="a .gguf file, a Hugging Face folder or an HF catalog model")
    p.add_argument("--precision", choices=("int4", "int8", "fp16", "fp32"), default="int8")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--name", help="name of the compiled model")
    _json_opt(p)
    _cmd(p, "model_cmd:compile_model")

    p = ms.add_parser(
        "import", parents=[common], help="import a GGUF file keeping its own quantised weights"
    )
    p.add_argument("gguf", help="a .gguf file (Q4_0, Q4_1 and Q8_0 keep their blocks exactly)")
    p.add_argument("--name", help="name of the imported model (default: the file's stem)")
    _json_opt(p)
    _cmd(p, "model_cmd:import_model")

    p = ms.add_parser("verify", parents=[common], help="check a model against its source weights")
    p.add_argument("model")
    p.add_argument(
        "--fidelity",
        action="store_true",
        required=True,
        help="KL divergence of next-token distributions from the source weights (target <= 0.01)",
    )
    _json_opt(p)
    _cmd(p, "model_cmd:verify_model")

    _remote_parsers(ms, common)

    p = ms.add_parser("run", parents=[common], help="chat with a model (downloads it if needed)")
    p.add_argument("model")
    p.add_argument("-p", "--prompt", help="answer this once and exit (stdin works too)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--max-tokens", type=int, metavar="N", help="longest answer, in tokens")
    p.add_argument("--temperature", type=_float, metavar="T")
    p.add_argument("--top-p", type=_float, metavar="P")
    p.add_argument("--seed", type=int)
    p.add_argument("--ttl", type=_float, metavar="SECONDS", help="keep-alive in the service")
    _cmd(p, "console:run_model")


def _remote_parsers(ms: Any, common: argparse.ArgumentParser) -> None:
    p = ms.add_parser("attach", parents=[common], help="attach a remote vLLM deployment by URL")
    p.add_argument("url", help="the deployment's base URL, e.g. http://gpu-node:8000")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        metavar="KEY",
        help="its API key (vLLM's --api-key), kept in <home>/remote-keys.json (mode 0600); "
        "'-' reads it from stdin, so no process list shows it",
    )
    key.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="the name of an environment variable of the engine that holds the key",
    )
    p.add_argument("--name", help="name of the attachment (and of its model, if it serves one)")
    _json_opt(p)
    _cmd(p, "remote_cmd:attach")

    p = ms.add_parser("detach", parents=[common], help="detach a remote vLLM deployment")
    p.add_argument("remote", help="its name, its URL, or one of its models")
    _json_opt(p)
    _cmd(p, "remote_cmd:detach")

    p = ms.add_parser("remotes", parents=[common], help="the attached remote deployments")
    _json_opt(p)
    _cmd(p, "remote_cmd:remotes")


def _other_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser("cache", parents=[common], help="the model cache")
    cs = cache.add_subparsers(title="commands", metavar="COMMAND")
    cache.set_defaults(_help=cache)
    p = cs.add_parser("list", aliases=["ls"], parents=[common], help="cached models")
    _json_opt(p)
    _cmd(p, "cache_cmd:cache_list")
    p = cs.add_parser("location", parents=[common], help="print the cache folder")
    _json_opt(p)
    _cmd(p, "cache_cmd:cache_location")
    p = cs.add_parser("cd", parents=[common], help="move the cache to another folder")
    p.add_argument("folder")
    _json_opt(p)
    _cmd(p, "cache_cmd:cache_cd")
    p = cs.add_parser("remove", aliases=["rm"], parents=[common], help="delete a cached model")
    p.add_argument("model")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    _json_opt(p)
    _cmd(p, "model_cmd:remove")
    p = cs.add_parser("verify", parents=[common], help="check cached files against checksums")
    p.add_argument("model", nargs="?", help="one model (default: all)")
    _json_opt(p)
    _cmd(p, "cache_cmd:cache_verify")

    svc = sub.add_parser("service", parents=[common], help="the background engine (REST API)")
    ss = svc.add_subparsers(title="commands", metavar="COMMAND")
    svc.set_defaults(_help=svc)
    for name, target, text in (
        ("start", "service_cmd:start", "start the service in the background"),
        ("restart", "service_cmd:restart", "stop, then start it again"),
    ):
        p = ss.add_parser(name, parents=[common], help=text)
        p.add_argument("--host", help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, help="port (default: the stable port, or a free one)")
        p.add_argument(
            "--idle-timeout", type=_float, metavar="S", help="stop after S seconds without requests"
        )
        p.add_argument(
            "--api-key",
            metavar="KEY",
            help="require this key (Authorization: Bearer KEY); needed to bind a non-loopback "
            "--host. Default: $INGOT_API_KEY",
        )
        _json_opt(p)
        _cmd(p, target)
    p = ss.add_parser("stop", parents=[common], help="stop the service")
    _cmd(p, "service_cmd:stop")
    p = ss.add_parser("status", parents=[common], help="is it running, and where (exit 3: no)")
    _json_opt(p)
    _cmd(p, "service_cmd:status")
    p = ss.add_parser("ps", parents=[common], help="models loaded in the service")
    _json_opt(p)
    _cmd(p, "service_cmd:ps")
    p = ss.add_parser("logs", parents=[common], help="the service's log")
    p.add_argument("-n", "--lines", type=int, default=50, help="lines from the end (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    _cmd(p, "service_cmd:logs")

    p = sub.add_parser("embed", parents=[common], help="embed texts with an embedding model")
    p.add_argument("model", help="an embedding model, e.g. all-minilm-l6-v2")
    p.add_argument("text", nargs="*", help="texts to embed (default: one per line on stdin)")
    p.add_argument(
        "--truncate", action="store_true", help="cut texts at the model's limit instead of failing"
    )
    p.add_argument("--base64", action="store_true", help="print each vector as base64 float32")
    p.add_argument("--ttl", type=_float, metavar="SECONDS", help="keep-alive in the service")
    _json_opt(p)
    _cmd(p, "embed_cmd:embed")

    p = sub.add_parser("hardware", parents=[common], help="this machine, and what runs on it")
    _json_opt(p)
    _cmd(p, "cache_cmd:hardware")

    p = sub.add_parser("bench", parents=[common], help="measure a model in the service")
    p.add_argument("model")
    p.add_argument(
        "--concurrency",
        default="1,2,4",
        metavar="N[,N...]",
        help="parallel requests per level (default 1,2,4)",
    )
    p.add_argument("--tokens", type=int, default=128, metavar="N", help="max tokens per answer")
    p.add_argument("--prompt-tokens", type=int, default=128, metavar="N", help="prompt length")
    p.add_argument("--rounds", type=int, default=2, metavar="N", help="requests per slot")
    p.add_argument(
        "--compare",
        metavar="URL",
        help="also run the same load against another OpenAI-compatible server (llama.cpp's "
        "server, Ollama, LM Studio, ...) and show the ratios",
    )
    p.add_argument(
        "--compare-model",
        metavar="NAME",
        help="the model name to send to --compare (default: the first of its /v1/models)",
    )
    _json_opt(p)
    _cmd(p, "bench:bench")

    # Dispatched before parsing (see main); listed here for --help.
    sub.add_parser("engine", help="the JSON-RPC engine over stdio (what editors launch)")


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before and after the command (`ingot model list --debug`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--home", default=argparse.SUPPRESS, help="Ingot home (default $INGOT_HOME or ~/.ingot)"
    )
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and logs"
    )
    parser = Parser(
        prog="ingot",
        parents=[common],
        description="Ingot: run language models locally. `ingot model run smollm2-135m` to start.",
        epilog="Docs: docs/cli.md. Exit codes: 0 ok, 1 error, 2 usage, 3 no service (status), "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"ingot {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    _model_parsers(sub, common)
    _other_parsers(sub, common)
    return parser


def _resolve(target: str) -> Callable[[CliContext, argparse.Namespace], int]:
    module, func = target.split(":")
    fn: Callable[[CliContext, argparse.Namespace], int] = getattr(
        importlib.import_module(f"server.cli.{module}"), func
    )
    return fn


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "engine" in argv and all(a.startswith("-") for a in argv[: argv.index("engine")]):
        # Everything after `engine` is the engine's own (`ingot engine --debug`), and an editor
        # launching it should not wait for the CLI's parser to be built.
        from server.jsonrpc.main import run_stdio

        return int(run_stdio(argv[argv.index("engine") + 1 :]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    target: str | None = getattr(args, "_target", None)
    if target is None:
        helper: argparse.ArgumentParser = getattr(args, "_help", parser)
        helper.print_help(sys.stderr)
        return EXIT_USAGE
    debug = bool(getattr(args, "debug", False))
    from engine.config import default_home
    from server.cli.context import CliContext

    home_arg = getattr(args, "home", None)
    if home_arg:
        home = Path(home_arg).expanduser().resolve()
        # Children (the service, compile steps) must see the same home.
        os.environ["INGOT_HOME"] = str(home)
    else:
        home = default_home()
    _configure_logging(debug)
    ctx = CliContext(home=home, debug=debug, json=getattr(args, "output", "text") == "json")
    try:
        return _resolve(target)(ctx, args)
    except KeyboardInterrupt:
        from server.cli.render import note

        note("Interrupted.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `ingot model list | head`: the reader left; exit quietly as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:
        return _report(e, debug)
    finally:
        try:
            ctx.close()
        except (Exception, KeyboardInterrupt):
            if debug:
                raise


def _report(e: Exception, debug: bool) -> int:
    from engine.errors import IngotError
    from server.cli.render import note, print_error

    if debug:
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    from server.cli.client import Interrupted

    if isinstance(e, Interrupted):
        note(e.message + (f" {e.hint}" if e.hint else ""))
        return e.exit_code
    if isinstance(e, IngotError):
        print_error(e.message, e.hint)
        return int(getattr(e, "exit_code", EXIT_ERROR))
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": str(e)}
        where = ".".join(str(x) for x in first["loc"])
        print_error(
            f"Unexpected answer or invalid value ({where}: {first['msg']}).",
            "Run again with --debug for details.",
        )
        return EXIT_ERROR
    if isinstance(e, OSError) and e.filename:
        print_error(f"{e.strerror or e}: {e.filename}", "Check the path and its permissions.")
        return EXIT_ERROR
    print_error(
        f"Unexpected {type(e).__name__}: {e}",
        None if debug else "Run again with --debug to see the traceback, and please report it.",
    )
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

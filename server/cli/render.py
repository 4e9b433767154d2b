"""Output: rich tables on a terminal, plain aligned text when piped, JSON for `-o json`, errors."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def dump(obj: Any) -> Any:
    """The JSON form of wire models (camelCase, as the REST API answers), recursively."""
    from pydantic import BaseModel

    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", by_alias=True)
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [dump(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(dump(obj), indent=2) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """A message for the person at the terminal (stderr: stdout stays for results)."""
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        Console(stderr=True, highlight=False).print(f"[dim]{escape(message)}[/dim]")
    else:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def print_error(message: str, hint: str | None) -> None:
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.markup import escape

        c = Console(stderr=True, highlight=False)
        c.print(f"[bold red]error:[/bold red] {escape(message)}")
        if hint:
            c.print(f"[yellow]hint:[/yellow] {escape(hint)}")
    else:
        sys.stderr.write(f"error: {message}\n")
        if hint:
            sys.stderr.write(f"hint: {hint}\n")
        sys.stderr.flush()


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600:02d}h"


def ago(ts: float) -> str:
    return human_duration(max(0.0, time.time() - ts)) + " ago"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def human_tokens(n: int) -> str:
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
) -> None:
    """A table: rich on a terminal; on a pipe, aligned plain columns with one header line, so that
    `awk`/`cut` work and nothing decorative ends up in files."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        def cell(c: str) -> Text:
            # Verdicts at a glance: what is ready or runs here, and what does not.
            style = "green" if c == "yes" or c.startswith("yes,") else ""
            return Text(c, style="red" if c.startswith("no:") else style)

        table = Table(title=title, header_style="bold", box=None, pad_edge=False)
        for col in columns:
            table.add_column(col, justify="right" if col in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(cell(c) for c in row))
        Console(highlight=False).print(table)
        return
    if title:
        sys.stdout.write(title + "\n")
    cells = [list(columns), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for r in cells:
        line = "  ".join(
            c.rjust(w) if columns[i] in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        sys.stdout.write(line.rstrip() + "\n")
    sys.stdout.flush()


def print_fields(pairs: Sequence[tuple[str, str]], *, title: str | None = None) -> None:
    """`key: value` lines (a two-column grid on a terminal)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column(overflow="fold")
        for k, v in pairs:
            grid.add_row(escape(k), escape(v))
        c = Console(highlight=False)
        if title:
            c.print(f"[bold]{escape(title)}[/bold]")
        c.print(grid)
        return
    if title:
        sys.stdout.write(title + "\n")
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        sys.stdout.write(f"{(k + ':').ljust(width + 1)} {v}\n")
    sys.stdout.flush()


def say(text: str) -> None:
    """A result line on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

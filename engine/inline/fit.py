"""Fitting a model's answer to the cursor: one line mid-line, a block only where a block can start."""

from __future__ import annotations

import re

FENCE = re.compile(r"^\s*```[\w+-]*\n(.*?)\n?```\s*$", re.S)
CURSOR = "<CURSOR>"
# A line ending in one of these opens a block: the suggestion may go on over several lines.
OPENERS = (":", "{", "(", "[", "=>")
CLOSERS = ")]}"
# Already after the cursor: punctuation a suggestion must not type a second time.
TRAILING_PUNCTUATION = set(CLOSERS) | set("\"'`,:;")
# Shorter lines (`return False`, `else:`, `}`) recur in real code; longer ones repeated are a small
# model looping over what it was shown.
MIN_REPEAT = 14


def strip_fences(text: str) -> str:
    """The code in a model's answer: without a surrounding ``` fence, and without what small
    models add after the code (a closing fence they never opened, then an explanation)."""
    m = FENCE.match(text)
    if m:
        return m.group(1)
    lines = text.split("\n")
    if lines and lines[0].lstrip().startswith("```"):
        lines = lines[1:]  # an opening fence whose end is missing or followed by prose
    for i, line in enumerate(lines):
        if line.strip().startswith("```"):
            # The code ends where its fence does; each code line ended with a newline.
            return "".join(f"{code}\n" for code in lines[:i])
    return "\n".join(lines)


def drop_restated_prefix(prefix: str, text: str) -> str:
    """Small models often repeat the text before the cursor before continuing it: drop the
    longest start of the completion that the document already has just before the cursor."""
    for k in range(min(len(prefix), len(text)), 0, -1):
        if prefix.endswith(text[:k]) and ("\n" in text[:k] or k == len(prefix) or k >= 8):
            return text[k:]
    return text


def wants_block(before: str, after: str) -> bool:
    """Whether a suggestion may span lines here: at a line start (only indentation before the
    cursor) or right after a block opener, with nothing after the cursor on the line."""
    line_before = before.rpartition("\n")[2].rstrip()
    if after.partition("\n")[0].strip():
        return False
    return not line_before.strip() or line_before.endswith(OPENERS)


def fit_completion(before: str, after: str, answer: str) -> str:
    """What to insert at the cursor from a model's raw `answer`, or "" when nothing useful came.

    Mid-line the suggestion finishes the line and stops there, without the text the line already
    has after the cursor; a block (see `wants_block`) ends at a blank line or where it dedents
    below where it started. Nothing re-states the text before the cursor or a line above."""
    text = _clean(answer)
    line_before = before.rpartition("\n")[2]
    line_after = after.partition("\n")[0]
    earlier = _significant(before.split("\n")[:-1])
    if wants_block(before, after):
        return _fit_block(before, after, text, earlier)
    text = drop_restated_prefix(before, text)
    first = text.partition("\n")[0].rstrip()
    if line_before[-1:] in (" ", "\t"):
        first = first.lstrip(" \t")  # the space is typed already
    if _repeats(first, earlier):
        return ""
    first = _drop_overlap(first, line_after.strip())
    return first if first.strip() else ""


def _clean(answer: str) -> str:
    text = strip_fences(answer.replace("\r\n", "\n"))
    if text.startswith(CURSOR):
        text = text[len(CURSOR) :]
    # What follows an echoed marker is the text after the cursor, which the document has.
    return text.partition(CURSOR)[0]


def _fit_block(before: str, after: str, text: str, earlier: set[str]) -> str:
    line_before = before.rpartition("\n")[2]
    at_start = not line_before.strip()
    base = _indent(line_before)
    following = next((ln.strip() for ln in after.split("\n")[1:] if ln.strip()), "")
    text = drop_restated_prefix(before, text)
    lines = text.split("\n")
    if at_start:
        if len(lines) > 1 and not lines[0].strip():
            # The model ended the (empty) cursor line: its next line, indentation and all, is
            # the suggestion, and one that dedents leaves the block the cursor is in.
            while len(lines) > 1 and not lines[0].strip():
                del lines[0]
            if _indent(lines[0]) < base:
                return ""
        if line_before:
            lines[0] = lines[0].lstrip(" \t")  # the indentation is typed already
    elif not lines[0].strip():
        while len(lines) > 2 and not lines[1].strip():
            del lines[1]  # blank lines between the opener and its body
    if _repeats(lines[0], earlier) or (at_start and lines[0].strip() == following):
        return ""
    seen = earlier | _significant([line_before + lines[0]])
    kept = [lines[0].rstrip()]
    for line in lines[1:]:
        if not line.strip():
            break
        indent = _indent(line)
        if indent < base or (not at_start and indent == base):
            if not at_start and indent == base and line.lstrip()[:1] in CLOSERS:
                kept.append(line.rstrip())  # the bracket that closes the opener's block
            break
        if _repeats(line, seen) or line.strip() == following:
            break
        kept.append(line.rstrip())
        seen |= _significant([line])  # a small model loops over its own lines too
    while len(kept) > 1 and kept[-1].endswith(OPENERS):
        kept.pop()  # a line that opens a block whose body was cut off
    out = "\n".join(kept).rstrip()
    if not out.strip():
        return ""
    if not any(c.isalnum() for c in out) and after.lstrip().startswith(out.strip()):
        return ""  # only punctuation the document already has next
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _significant(lines: list[str]) -> set[str]:
    return {s for s in (ln.strip() for ln in lines) if len(s) >= MIN_REPEAT}


def _repeats(line: str, earlier: set[str]) -> bool:
    """Whether `line` re-states a line above: the same, or one the start of the other (a
    repetition cut short by the token limit, or one the model ran on past)."""
    s = line.strip()
    if len(s) < MIN_REPEAT:
        return False
    return any(s.startswith(e) or e.startswith(s) for e in earlier)


def _drop_overlap(text: str, rest: str) -> str:
    """`text` without an end that the line already has after the cursor (a closing bracket, or
    the whole rest of the line typed again)."""
    for k in range(min(len(rest), len(text)), 0, -1):
        tail = rest[:k]
        if text.endswith(tail) and (k >= 3 or set(tail) <= TRAILING_PUNCTUATION):
            if _closes_its_own(text, tail):
                continue  # `print(|)` + `len(x)`: that `)` closes the suggestion's own `(`
            return text[:-k]
    return text


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _closes_its_own(text: str, tail: str) -> bool:
    """Whether a closing bracket in `tail` (the end of `text`) is needed by an opener in `text`."""
    return any(
        c in _PAIRS and text.count(c) <= text.count(_PAIRS[c]) for c in set(tail) if c in _PAIRS
    )

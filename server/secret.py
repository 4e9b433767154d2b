"""The per-home secret: a random token in `<home>/rest-secret` (mode 0600) that management and
native REST routes require, so that neither a web page nor another local user can drive the engine.

The process that owns a home (the JSON-RPC engine or `ingot service start`) creates it on its first
start; the `ingot` CLI and a forwarding engine read it from the home and send it as
`X-Ingot-Secret`. It is never logged, never put on a command line and never passed to a child
process in its environment: whoever may read the home's file may use the engine.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

SECRET_FILE = "rest-secret"
HEADER = "X-Ingot-Secret"
# token_urlsafe(32) is 43 characters; anything much longer or shorter is not a file we wrote.
MIN_CHARS, MAX_CHARS = 32, 256
POSIX = sys.platform != "win32"


class SecretFileError(ValueError):
    """The secret file exists but must not be used (wrong owner or mode, not a regular file,
    damaged) or cannot be read or written. `hint` says how to fix it."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(f"{message} {hint}")
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class HomeSecret:
    """The secret and where it lives (for error hints); repr never shows the value."""

    value: str = field(repr=False)
    path: Path

    def matches(self, given: str) -> bool:
        # Constant time: how far a guess matched must not show in how long the answer took.
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.value.encode("utf-8"))


def secret_path(home: Path) -> Path:
    return home / SECRET_FILE


def _fix_hint(path: Path) -> str:
    if POSIX:
        return (
            f"Run `chmod 600 {path}` as the user who runs Ingot, or delete the file (the next "
            "`ingot service start` or editor start makes a new one)."
        )
    return "Delete the file; the next `ingot service start` or editor start makes a new one."


def _check(st: os.stat_result, path: Path) -> None:
    """Refuse a file another user could have written or can read."""
    if not stat.S_ISREG(st.st_mode):
        raise SecretFileError(f"{path} is not a regular file.", _fix_hint(path))
    if not POSIX:
        return  # NTFS ACLs: the file lives in the user's own profile, readable by them only
    if st.st_uid != os.geteuid():
        raise SecretFileError(
            f"{path} belongs to user id {st.st_uid}, not to you (user id {os.geteuid()}); "
            "another user could know the secret.",
            f"Delete it as that user or as root (`rm {path}`); Ingot makes a new one on its next "
            "start.",
        )
    if st.st_mode & 0o077:
        raise SecretFileError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; other users could read or change "
            "the secret.",
            _fix_hint(path),
        )


def read_secret(home: Path) -> HomeSecret | None:
    """The home's secret, or None when there is none yet. Raises SecretFileError for a file that
    must not be used."""
    path = secret_path(home)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as e:
        # O_NOFOLLOW on a symlink: ELOOP. A link could point at a file someone else controls.
        raise SecretFileError(f"Cannot read {path}: {e.strerror}.", _fix_hint(path)) from None
    try:
        _check(os.fstat(fd), path)
        raw = os.read(fd, MAX_CHARS + 2)
    finally:
        os.close(fd)
    value = raw.decode("ascii", "replace").strip()
    if not (MIN_CHARS <= len(value) <= MAX_CHARS) or not value.isascii() or not value.isprintable():
        raise SecretFileError(f"{path} is damaged (not an Ingot secret).", _fix_hint(path))
    return HomeSecret(value, path)


def ensure_secret(home: Path) -> HomeSecret:
    """The home's secret, made now if there is none. Written to a private temporary file and
    linked into place, so a reader never sees a partial file and two processes starting at once
    agree on one secret (the second link fails and that process reads the first one's)."""
    found = read_secret(home)
    if found is not None:
        return found
    path = secret_path(home)
    tmp = home / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600
        )
        try:
            if POSIX:
                os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError:
            # No hard links here (some network or FAT file systems): a rename, which could
            # replace a file made in the meantime; then both processes read whichever won.
            if not path.exists():
                os.replace(tmp, path)
    except OSError as e:
        raise SecretFileError(
            f"Cannot create {path}: {e.strerror or e}.",
            f"Check that {home} exists and that you can write to it.",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    made = read_secret(home)
    if made is None:
        raise SecretFileError(f"{path} vanished right after it was made.", _fix_hint(path))
    return made


def health_proof(secret: str, challenge: str) -> str:
    """What a server that knows `secret` answers to `/health?challenge=...`: a client checks it
    before sending the secret, so a process that took over a dead owner's port never gets it."""
    mac = hmac.new(secret.encode("utf-8"), b"ingot-health:" + challenge.encode("utf-8"), "sha256")
    return mac.hexdigest()

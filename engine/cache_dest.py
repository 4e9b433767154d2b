"""Where the model cache may move: an absolute, writable, empty (or new) folder that is neither a
system folder nor inside the cache. Checked before anything is unloaded or moved, so a refused
move changes nothing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.cache import CACHE_ENTRIES
from engine.errors import InvalidRequest

# Trees that belong to the operating system (or are not real files at all): never a cache.
SYSTEM_TREES = tuple(
    Path(p)
    for p in (
        "/proc",
        "/sys",
        "/dev",
        "/run",
        "/boot",
        "/etc",
        "/bin",
        "/sbin",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/usr/bin",
        "/usr/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/usr/libexec",
        "/usr/include",
        "/System",
        "/private/etc",
        "/private/var/run",
    )
)
# Shared top-level folders: a cache belongs in a folder of its own below them.
SHARED_FOLDERS = tuple(
    Path(p)
    for p in (
        "/usr",
        "/usr/local",
        "/usr/share",
        "/var",
        "/var/lib",
        "/var/tmp",
        "/tmp",
        "/home",
        "/Users",
        "/root",
        "/opt",
        "/srv",
        "/mnt",
        "/media",
        "/Volumes",
        "/private",
        "/Library",
        "/Applications",
    )
)


def _refuse(message: str, hint: str) -> InvalidRequest:
    return InvalidRequest(message, hint=hint, param="path")


def _windows_system(dest: Path) -> bool:
    if sys.platform != "win32":
        return False
    windir = Path(os.environ.get("SYSTEMROOT", r"C:\Windows"))
    programs = [os.environ.get(v) for v in ("ProgramFiles", "ProgramFiles(x86)", "ProgramData")]
    trees = [windir, *(Path(p) for p in programs if p)]
    return any(dest == t or dest.is_relative_to(t) for t in trees)


def _nearest_existing(dest: Path) -> Path:
    p = dest
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def check_cache_destination(dest: Path, cache_root: Path) -> Path:
    """The resolved destination, or InvalidRequest (param `path`) saying what to choose instead.
    Blocking (file system): call it in a thread."""
    choose = "Choose a new or empty folder of your own, e.g. ~/ingot-models."
    try:
        if not dest.expanduser().is_absolute():
            # The engine's working directory means nothing to the caller: refuse to guess.
            raise _refuse(
                f"'{dest}' is a relative path.", "Give the cache folder as an absolute path."
            )
        resolved = dest.expanduser().resolve()
        root = cache_root.resolve()
        if resolved == root:
            return resolved
        if resolved.parent == resolved or resolved == Path.home().resolve():
            raise _refuse(f"{resolved} cannot hold the model cache.", choose)
        if _windows_system(resolved) or any(
            resolved == t or resolved.is_relative_to(t) for t in SYSTEM_TREES
        ):
            raise _refuse(
                f"{resolved} is a system folder; the model cache cannot go there.", choose
            )
        if resolved in SHARED_FOLDERS:
            raise _refuse(f"{resolved} is a shared system folder, not one for the cache.", choose)
        if resolved.is_relative_to(root):
            raise _refuse(f"{resolved} is inside the current cache ({root}).", choose)
        existing = _nearest_existing(resolved)
        if not existing.is_dir():
            raise _refuse(f"{existing} is a file, not a folder.", choose)
        if not os.access(existing, os.W_OK | os.X_OK):
            raise _refuse(
                f"{existing} is not writable by the user the engine runs as.",
                "Choose a folder you can write to, or fix its permissions.",
            )
        if existing == resolved and any(p.name not in CACHE_ENTRIES for p in resolved.iterdir()):
            raise _refuse(f"{resolved} is not empty.", choose)
    except (OSError, ValueError) as e:
        # An unreadable parent, a name with a NUL byte, a path too long: the caller's to fix.
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise _refuse(f"'{dest}' cannot be used as the cache folder: {reason}.", choose) from None
    return resolved

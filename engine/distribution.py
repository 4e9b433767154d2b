"""The engine's distribution on the package index: its name (the command stays `ingot`) and version."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

# The PyPI project named `ingot` is someone else's: Ingot installs as `ingot-engine`, while its
# command and import packages (`engine`, `server`, `protocol`) keep their names.
DISTRIBUTION = "ingot-engine"


def ingot_version() -> str:
    """The installed distribution's version; a source checkout that was never installed has none."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0+local"

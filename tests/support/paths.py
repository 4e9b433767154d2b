"""Paths the tests share: the repository root and the build cache reused between test runs."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_BUILD_ROOT = REPO / ".cache" / "test-models"

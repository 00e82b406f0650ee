"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvaudit.targets import resolve_module


@pytest.fixture(scope="session")
def kvpress_presses_dir() -> Path:
    """kvpress's installed presses folder, found without importing kvpress."""
    path = resolve_module("kvpress.presses")
    if path is None:
        pytest.fail("kvpress is not installed: `make test` installs it")
    return path.parent

"""Test helpers: run the CLI in-process; where the fixture presses live."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from kvaudit.cli import app

TESTS = Path(__file__).parent
STATIC_PRESSES = TESTS / "presses" / "static"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    exception: BaseException | None

    def json(self) -> dict:
        return json.loads(self.stdout)


def run_cli(*args: str) -> CliResult:
    """Run ``kvaudit ARGS`` in-process; a traceback would show up as ``exception``."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    exception = result.exception if not isinstance(result.exception, SystemExit) else None
    return CliResult(result.exit_code, result.stdout, result.stderr, exception)

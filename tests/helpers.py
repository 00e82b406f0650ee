"""Test helpers: run the CLI in-process; where the fixture presses live."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from kvaudit.cli import app

TESTS = Path(__file__).parent
STATIC_PRESSES = TESTS / "presses" / "static"

# A press citing ChunkKV that scores every layer: KVA101 at 12:18.
NO_REUSE = '''"""ChunkKV, arXiv 2502.00299."""
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress


@dataclass
class P(BasePress):
    press: object = None

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
        index = scores.topk(10, dim=-1).indices
        return keys.gather(2, index), values.gather(2, index)
'''

# A correct leader/follower reuse in a base class; subclasses in other files inherit it.
REUSE_BASE = '''"""ChunkKV, arXiv 2502.00299."""
from dataclasses import dataclass

from kvpress.presses.base_press import BasePress


@dataclass
class ReuseBase(BasePress):
    press: object = None
    n_reuse: int = 2

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        leader = module.layer_idx // self.n_reuse * self.n_reuse
        if module.layer_idx == leader:
            scores = self.press.score(module, hidden_states, keys, values, attentions, kwargs)
            self.indices = scores.topk(10, dim=-1).indices
        return keys.gather(2, self.indices), values.gather(2, self.indices)
'''


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


@dataclass
class Traced:
    """A pipeline run with the trace stage, as the trace tests read it (``kvaudit trace``'s view of the result)."""

    result: object  # kvaudit.model.AuditResult
    tracebacks: list[str]

    @property
    def traces(self) -> list:
        return [press.trace for press in self.result.presses if press.trace is not None]

    @property
    def error_lines(self) -> list[str]:
        return [status.message for status in self.result.files if status.status == "error"]

    @property
    def exit_code(self) -> int:
        from kvaudit.exitcodes import exit_code

        return exit_code(self.result)

    @property
    def model(self):
        return self.result.traced.model if self.result.traced is not None else None


def trace_targets(targets: list[str], options, *, static_rules: bool = False, check=None) -> Traced:
    """``kvaudit trace TARGETS`` in-process (the static rules off), or ``check --trace`` with ``static_rules``."""
    from kvaudit.engine import CheckOptions
    from kvaudit.pipeline import RunSettings, Stages, run

    outcome = run(RunSettings(list(targets), check or CheckOptions(), Stages(static_rules, options), progress=False))
    return Traced(outcome.result, outcome.tracebacks)

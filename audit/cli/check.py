"""``kvaudit check``: the static audit (plus, on request, the tracer's view beside it)."""

from __future__ import annotations

import sys
from enum import Enum

import typer
from rich.console import Console

from audit.cli import app
from audit.engine import CheckOptions, run_check
from audit.exitcodes import BAD_INPUT, check_exit_code
from audit.model import AuditResult
from audit.targets import DEFAULT_TARGET


class CheckFormat(str, Enum):
    terminal = "terminal"
    json = "json"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


def emit(result: AuditResult, output_format: CheckFormat) -> None:
    """Write ``result`` to stdout in ``output_format``."""
    if output_format is CheckFormat.json:
        from audit.reporters.json_report import render_json

        sys.stdout.write(render_json(result))
    else:
        from audit.reporters.terminal import render_terminal

        render_terminal(result, Console(), errors=Console(stderr=True))


@app.command()
def check(
    targets: list[str] = typer.Argument(
        None, help=f"Files, directories or dotted module names. Default: {DEFAULT_TARGET}."
    ),
    output_format: CheckFormat = typer.Option(CheckFormat.terminal, "--format", "-f", help="Output format."),
    fail_on: FailOn = typer.Option(FailOn.error, "--fail-on", help="Lowest severity that makes the exit code 1."),
    claim: list[str] = typer.Option([], "--claim", help="Force a claim (e.g. layer-index-reuse) onto presses that cite no paper."),
    select: list[str] = typer.Option(None, "--select", help="Run only these rule ids (or prefixes)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Skip these rule ids (or prefixes)."),
    trace: bool = typer.Option(False, "--trace", help="Also run each press on a tiny model and show both verdicts."),
    compare_reference: bool = typer.Option(
        False, "--compare-reference", help="With --trace: run the reference reuse press beside each press."
    ),
    arch: str = typer.Option("llama", "--arch", help="With --trace: tiny model architecture."),
    layers: int = typer.Option(8, "--layers", help="With --trace: tiny model layers."),
    tokens: int = typer.Option(256, "--tokens", help="With --trace: tokens of the longer prefill."),
    timeout: float = typer.Option(120.0, "--timeout", help="With --trace: seconds allowed per press."),
) -> None:
    """Audit press source statically: claims, verdicts, line-level evidence and findings."""
    from audit.claims import known_claims

    unknown = sorted(set(claim) - known_claims())
    if unknown:
        typer.echo(f"error: unknown claim {', '.join(unknown)}; known: {', '.join(sorted(known_claims()))}", err=True)
        raise typer.Exit(BAD_INPUT)
    options = CheckOptions(forced_claims=list(claim), select=list(select) if select else None, ignore=list(ignore))
    result = run_check(list(targets) if targets else [DEFAULT_TARGET], options)
    if trace or compare_reference:
        # Imported here: the tracer's worker imports torch, the static path never does.
        from audit.tracer import TraceOptions, attach_traces

        attach_traces(result, TraceOptions(arch=arch, layers=layers, tokens=tokens, timeout=timeout,
                                           compare_reference=compare_reference))
    emit(result, output_format)
    raise typer.Exit(check_exit_code(result, fail_on.value))

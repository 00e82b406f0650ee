"""``kvaudit trace``: run presses on a tiny model and report what each layer really did.

Exit codes (kvaudit.exitcodes): 0 traced, no defect; 1 a defect (crash, stale-indices, batch-row-0);
2 bad input, the trace extra missing, an internal error of the tracer, or no press could be traced
at all because of the options or the machine.
This module must stay light: the tracer's worker subprocess imports torch, never this process.
"""

from __future__ import annotations

import sys
from enum import Enum

import typer

from . import app
from .trace_options import (
    DEFAULTS,
    Arch,
    CompareReference,
    Debug,
    Device,
    Dtype,
    Layers,
    MemoryLimit,
    ModelPath,
    PressExpr,
    Timeout,
    Tokens,
    internal_errors,
    print_tracebacks,
    trace_options,
)


class TraceFormat(str, Enum):
    terminal = "terminal"  # the name `kvaudit check --format` uses for the same kind of view
    json = "json"


@app.command("trace")
def trace(
    targets: list[str] = typer.Argument(
        ...,
        metavar="TARGET...",
        help="File path or dotted module name, optionally ::ClassName (e.g. kvpress.presses.chunkkv_press).",
    ),
    press: PressExpr = None,
    arch: Arch = DEFAULTS["arch"],
    layers: Layers = DEFAULTS["layers"],
    tokens: Tokens = DEFAULTS["tokens"],
    model: ModelPath = None,
    device: Device = DEFAULTS["device"],
    dtype: Dtype = DEFAULTS["dtype"],
    timeout: Timeout = DEFAULTS["timeout"],
    compare_reference: CompareReference = False,
    memory_limit: MemoryLimit = None,
    output_format: TraceFormat = typer.Option(TraceFormat.terminal, "--format", "-f", help="Output format."),
    debug: Debug = False,
) -> None:
    """Trace presses on a tiny model: score() calls, kept indices, reuse, defects — layer by layer."""
    from ..tracer import trace_targets

    options = trace_options(arch=arch, layers=layers, tokens=tokens, model=model, device=device, dtype=dtype,
                            timeout=timeout, press=press, compare_reference=compare_reference,
                            memory_limit=memory_limit)
    with internal_errors(", ".join(targets), debug):
        report = trace_targets(list(targets), options)
        print_tracebacks(report.tracebacks, debug)
        if output_format is TraceFormat.json:
            from ..reporters.trace_json import render_trace_json

            sys.stdout.write(render_trace_json(report))
            for message in report.error_lines:  # also on stderr: the one line a shell user sees
                typer.echo(f"error: {message}", err=True)
        else:
            from rich.console import Console

            from ..reporters.trace_terminal import render_trace_report

            render_trace_report(report, Console())
    raise typer.Exit(report.exit_code)

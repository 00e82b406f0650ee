"""``kvaudit trace``: run presses on a tiny model and check every claim of their papers.

Exit codes (kvaudit.exitcodes): 0 traced, no defect and no violated claim (accepted ones aside);
1 a defect (crash, stale-indices, batch-row-0) or a violated claim; 2 bad input, the trace extra
missing, an internal error of the tracer, or no press could be traced at all because of the options
or the machine.
This module must stay light: the tracer's worker subprocess imports torch, never this process.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from . import app
from .trace_options import (
    DEFAULTS,
    Arch,
    CompareReference,
    DecodeSteps,
    Debug,
    Device,
    Dtype,
    Layers,
    MemoryLimit,
    LongTokens,
    ModelPath,
    PressExpr,
    Ratios,
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
    long_tokens: LongTokens = None,
    ratios: Ratios = DEFAULTS["ratios"],
    decode_steps: DecodeSteps = DEFAULTS["decode_steps"],
    model: ModelPath = None,
    device: Device = DEFAULTS["device"],
    dtype: Dtype = DEFAULTS["dtype"],
    timeout: Timeout = DEFAULTS["timeout"],
    compare_reference: CompareReference = False,
    memory_limit: MemoryLimit = None,
    output_format: TraceFormat = typer.Option(TraceFormat.terminal, "--format", "-f", help="Output format."),
    debug: Debug = False,
    config: Path = typer.Option(None, "--config", help="Configuration file ([tool.kvaudit] accept, claim-overrides).",
                                dir_okay=False),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore every configuration file."),
) -> None:
    """Trace presses on a tiny model and check the claims of their papers, layer by layer, step by step."""
    from . import require_working_directory
    from ..config import Config, ConfigError, discover

    require_working_directory()
    from ..tracer import trace_targets

    try:
        settings = Config() if no_config else discover(config)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None

    options = trace_options(arch=arch, layers=layers, tokens=tokens, model=model, device=device, dtype=dtype,
                            timeout=timeout, press=press, compare_reference=compare_reference,
                            memory_limit=memory_limit, long_tokens=long_tokens, ratios=ratios,
                            decode_steps=decode_steps)
    with internal_errors(", ".join(targets), debug):
        report = trace_targets(list(targets), options, config=settings)
        print_tracebacks(report.tracebacks, debug)
        if output_format is TraceFormat.json:
            from ..reporters.trace_json import render_trace_json

            sys.stdout.write(render_trace_json(report))
            for message in report.error_lines:  # also on stderr: the one line a shell user sees
                typer.echo(f"error: {message}", err=True)
            for message in report.unused_acceptances:
                typer.echo(f"warning: {message}", err=True)
        else:
            from ..reporters.console import console
            from ..reporters.trace_terminal import render_trace_report

            render_trace_report(report, console())
    raise typer.Exit(report.exit_code)

"""``kvaudit trace``: run presses on a tiny model and check every claim of their papers.

The pipeline of ``kvaudit check`` with the static rules off and the trace stage on: the same files
are read (excludes, ``.gitignore``, configuration), the same claims decided. Exit codes
(:mod:`kvaudit.exitcodes`): 0 traced, no defect and no violated claim (accepted ones aside); 1 a defect
(crash, stale-indices, batch-row-0) or a violated claim; 2 bad input, the trace extra missing, an
internal error of the tracer, or no press could be traced at all because of the options or the machine.
This module must stay light: the tracer's worker subprocess imports torch, never this process.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from . import app
from .options import Debug, FileFlags, ReproFlags, TraceFlags, fail, internal_errors, with_options

if TYPE_CHECKING:
    from ..diff import Snapshot
    from ..model import AuditResult
    from ..tracer.options import TraceOptions


class TraceFormat(str, Enum):
    terminal = "terminal"  # the name `kvaudit check --format` uses for the same kind of view
    json = "json"


@app.command("trace")
@with_options(files=FileFlags, trace_flags=TraceFlags, repro=ReproFlags)
def trace(
    targets: list[str] = typer.Argument(
        ...,
        metavar="TARGET...",
        help="Files, directories or dotted module names, optionally ::ClassName (e.g. kvpress.presses.chunkkv_press).",
    ),
    output_format: TraceFormat = typer.Option(TraceFormat.terminal, "--format", "-f", help="Output format."),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", metavar="FILE", dir_okay=False,
        help="A claims baseline (kvaudit.claims-baseline/1): exit 1 only on claims and defects worse than it holds."),
    write_baseline: bool = typer.Option(
        False, "--write-baseline", help="Write this run's claim verdicts, acceptances and defects to the --baseline "
        "FILE and exit 0 (2 if a target could not be traced)."),
    debug: Debug = False,
    *,
    files: FileFlags,
    trace_flags: TraceFlags,
    repro: ReproFlags,
) -> None:
    """Trace presses on a tiny model and check the claims of their papers, layer by layer, step by step."""
    from ..exitcodes import exit_code
    from ..pipeline import Stages
    from .check import run_pipeline, static_options

    options, settings = static_options(files, static_rules=False)
    options.debug = debug
    stages = Stages(static_rules=False, trace=trace_flags.options())
    repro.refuse_unsupported(stages.trace)
    known = _read_baseline(baseline, write_baseline, stages.trace)  # a bad baseline: exit 2 before any trace
    result = run_pipeline(list(targets), options, settings, stages, debug).result
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    with internal_errors(", ".join(targets), debug):
        written = repro.write(result, stages.trace, options)
    if written:
        typer.echo(f"note: wrote {len(written)} reproduction(s) (a script and an issue draft each) to {repro.repro_dir}",
                   err=True)
    with internal_errors(", ".join(targets), debug):
        if output_format is TraceFormat.json:
            from ..reporters.trace_json import render_trace_json

            sys.stdout.write(render_trace_json(result))
            for status in result.files:  # also on stderr: the one line a shell user sees
                if status.status == "error":
                    typer.echo(f"error: {status.message}", err=True)
            for message in result.traced.unused_acceptances if result.traced else ():
                typer.echo(f"warning: {message}", err=True)
        else:
            from ..reporters.console import console
            from ..reporters.trace_terminal import render_trace_report

            render_trace_report(result, console())
    if baseline is not None:
        with internal_errors(", ".join(targets), debug):
            code = _apply_baseline(result, baseline, known)
        raise typer.Exit(code)
    raise typer.Exit(exit_code(result))


def _read_baseline(path: Path | None, write: bool, options: TraceOptions) -> Snapshot | None:
    """The claims baseline to gate on (None when writing one, or none given); exit 2 on a bad file or another grid."""
    if path is None and write:
        raise fail("--write-baseline needs --baseline FILE (the file to write)")
    if path is None or write:
        return None
    from ..claims_baseline import open_baseline
    from ..diff import DiffInputError
    from ..source import printable

    try:
        return open_baseline(path, options)
    except DiffInputError as err:
        raise fail(printable(str(err))) from None


def _apply_baseline(result: AuditResult, path: Path, known: Snapshot | None) -> int:
    """Write the baseline (``known`` None), or gate the run on it; its lines on stderr; the exit code."""
    from ..claims_baseline import apply_baseline
    from ..diff import DiffInputError
    from ..source import printable

    try:
        code, lines = apply_baseline(result, path, known)
    except (DiffInputError, OSError) as err:
        problem = f"cannot write {path}: {err.strerror or err}" if isinstance(err, OSError) else str(err)
        raise fail(printable(problem)) from None
    for line in lines:
        typer.echo(printable(f"kvaudit: {line}"), err=True)
    return code

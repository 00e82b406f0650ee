"""``kvaudit report TARGET... -o FILE.md``: a Markdown report a reviewer reads without running anything.

Exit codes: 0 the report was written; 2 a target could not be audited (the report is still
written, and says which) or the output cannot be written. Findings do not fail a report:
use ``kvaudit check`` as the CI gate.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from . import app
from .options import BAD_INPUT, Debug, FileFlags, ReproFlags, TraceFlags, internal_errors, with_options
from ..defaults import DEFAULT_TARGET

if TYPE_CHECKING:  # the engine and the tracer load when the command runs, not for --help
    from ..model import AuditResult
    from ..tracer.options import TraceOptions


def _installed(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)  # reads the dist-info, imports nothing
    except metadata.PackageNotFoundError:
        return "not installed"


def header_lines(options: TraceOptions | None, timestamp: bool) -> list[str]:
    from .. import __version__

    lines = [f"kvaudit {__version__}; kvpress {_installed('kvpress')}; transformers {_installed('transformers')}; "
             f"torch {_installed('torch')}"]
    if options is not None:
        model = ("kvaudit's tiny trained model (kvaudit.trained), prompts from its held-out text" if options.trained
                 else options.model_path) or (f"embedded tiny {options.arch}, {options.layers} layers, random weights, "
                                       f"seed {options.seed}, built locally (HF_HUB_OFFLINE=1)")
        lines.append(f"trace: {model}; {options.plan_label()}; {options.device}, {options.dtype}")
    else:
        lines.append("trace: not run (--no-trace): static audit only")
    if timestamp:
        lines.append(f"generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    return lines


def write_report(result: AuditResult, output: Path, targets: list[str], options: TraceOptions | None,
                 timestamp: bool, reproductions: list | None = None) -> None:
    """Render the report (and its figures) next to ``output``; each finding links to its ``reproductions``."""
    from ..reporters.figures import write_figures
    from ..reporters.markdown import ReportContext, render_markdown, reproduction_links

    output.parent.mkdir(parents=True, exist_ok=True)
    figures, note = write_figures(result, output.parent, output.stem)
    context = ReportContext(targets=targets, report_dir=output.parent, figures=figures, figures_note=note,
                            header_lines=header_lines(options, timestamp),
                            reproductions=reproduction_links(reproductions or [], output.parent))
    output.write_text(render_markdown(result, context), encoding="utf-8")


@app.command("report")
@with_options(defaults={"compare_reference": True}, files=FileFlags, trace_flags=TraceFlags, repro=ReproFlags)
def report(
    targets: list[str] = typer.Argument(None, help=f"Files, directories or module names. Default: {DEFAULT_TARGET}."),
    output: Path = typer.Option(..., "--output", "-o", help="The Markdown file to write; figures go beside it.",
                                dir_okay=False),
    trace: bool = typer.Option(True, "--trace/--no-trace", help="Trace each press (default) or audit statically only."),
    timestamp: bool = typer.Option(False, "--timestamp", help="Add the generation time (the report is then not byte-stable)."),
    debug: Debug = False,
    *,
    files: FileFlags,
    trace_flags: TraceFlags,
    repro: ReproFlags,
) -> None:
    """Write a Markdown report: conformance matrix, violations with figures, static evidence, per-layer traces."""
    from ..exitcodes import exit_code
    from .check import run_pipeline, static_options, tracing

    options, settings = static_options(files)
    options.debug = debug
    chosen = list(targets) if targets else [DEFAULT_TARGET]
    # Said before any work, and never filed as a press failure in the report.
    stages = tracing(trace, trace_flags, "; or pass --no-trace for a static report")
    repro.refuse_unsupported(stages.trace)
    result = run_pipeline(chosen, options, settings, stages, debug).result
    with internal_errors(", ".join(chosen), debug):
        reproductions = repro.write(result, stages.trace)
    try:
        write_report(result, output, chosen, stages.trace, timestamp, reproductions)
    except OSError as err:
        typer.echo(f"error: cannot write {output}: {err.strerror or err}", err=True)
        raise typer.Exit(BAD_INPUT) from None
    for status in result.files:
        if status.status == "error":
            typer.echo(f"error: {status.message}", err=True)
    typer.echo(f"wrote {output}")
    raise typer.Exit(exit_code(result, "never"))

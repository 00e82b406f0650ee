"""``kvaudit trace``: run presses on a tiny model and report what each layer really did.

Exit codes: 0 traced, no defect; 1 a defect (crash, stale-indices, batch-row-0); 2 bad input.
This module must stay light: the tracer's worker subprocess imports torch, never this process.
"""

from __future__ import annotations

import sys
from enum import Enum

import typer

from audit.cli import app
from audit.tracer.options import DEFAULT_TIMEOUT_S, DEFAULT_TOKENS


class TraceFormat(str, Enum):
    text = "text"
    json = "json"


@app.command("trace")
def trace(
    targets: list[str] = typer.Argument(
        ...,
        metavar="TARGET...",
        help="File path or dotted module name, optionally ::ClassName (e.g. kvpress.presses.chunkkv_press).",
    ),
    press: str | None = typer.Option(
        None, "--press", help='Build the press from this expression, e.g. "ChunkKVPress(SnapKVPress(0.5), 10)".'
    ),
    arch: str = typer.Option("llama", "--arch", help="Embedded tiny model: llama, qwen2, qwen3 or mistral."),
    layers: int = typer.Option(8, "--layers", help="Layers of the embedded tiny model."),
    tokens: int = typer.Option(DEFAULT_TOKENS, "--tokens", help="First prefill length (the second is 1.5× longer)."),
    model: str | None = typer.Option(None, "--model", help="Local Hugging Face model folder (never downloads)."),
    device: str = typer.Option("cpu", "--device", help="Torch device."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
    timeout: float = typer.Option(DEFAULT_TIMEOUT_S, "--timeout", help="Seconds allowed per press before it is killed."),
    compare_reference: bool = typer.Option(
        False, "--compare-reference", help="Also run the reference ChunkKVReusePress with the same scorer."
    ),
    output_format: TraceFormat = typer.Option(TraceFormat.text, "--format", "-f", help="Output format."),
) -> None:
    """Trace presses on a tiny model: score() calls, kept indices, reuse, defects — layer by layer."""
    from audit.tracer import TraceOptions, trace_targets

    options = TraceOptions(
        arch=arch,
        layers=layers,
        tokens=tokens,
        model_path=model,
        device=device,
        dtype=dtype,
        timeout=timeout,
        press_expr=press,
        compare_reference=compare_reference,
    )
    report = trace_targets(list(targets), options)
    if output_format is TraceFormat.json:
        from audit.reporters.trace_json import render_trace_json

        sys.stdout.write(render_trace_json(report))
        for message in report.input_errors:  # also on stderr: the one line a shell user sees
            typer.echo(f"error: {message}", err=True)
    else:
        from rich.console import Console

        from audit.reporters.trace_terminal import render_trace_report

        render_trace_report(report, Console())
    raise typer.Exit(report.exit_code)

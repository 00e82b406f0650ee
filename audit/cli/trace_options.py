"""Tracer options shared by ``trace``, ``check --trace`` and ``report``: declared once here.

Plain typer and stdlib: building options must not import torch, nor the tracer's package
(``kvaudit --help`` shows these options): what the tracer provides is imported inside the
functions that use it.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from ..defaults import (
    DEFAULT_DECODE_STEPS,
    DEFAULT_MEMORY_SHARE,
    DEFAULT_RATIOS,
    DEFAULT_TIMEOUT_S,
    DEFAULT_TOKENS,
    LONG_FACTOR,
)

if TYPE_CHECKING:
    from ..tracer.options import TraceOptions

# kvaudit.exitcodes.BAD_INPUT (a test checks they agree): that module imports the findings model,
# which `kvaudit --help` does not need.
BAD_INPUT = 2
PANEL = "Tracing (tiny local model, never downloads)"

PressExpr = Annotated[Optional[str], typer.Option(
    "--press", help='Tracing: build the press from this Python expression, e.g. "ChunkKVPress(SnapKVPress(0.5), 10)". '
    "It is evaluated (eval) in the tracer's worker: pass only trusted expressions.",
    rich_help_panel=PANEL)]
Arch = Annotated[str, typer.Option("--arch", help="Tracing: embedded tiny model: llama, qwen2, qwen3 or mistral.",
                                   rich_help_panel=PANEL)]
Layers = Annotated[int, typer.Option("--layers", help="Tracing: layers of the embedded tiny model.",
                                     rich_help_panel=PANEL)]
Tokens = Annotated[int, typer.Option("--tokens", help="Tracing: first prefill length (and the batch-2 prefill's).",
                                     rich_help_panel=PANEL)]
LongTokens = Annotated[Optional[int], typer.Option(
    "--long-tokens", help=f"Tracing: second prefill length, longer than --tokens. Default: {LONG_FACTOR} × --tokens (4096).",
    rich_help_panel=PANEL)]
Ratios = Annotated[str, typer.Option(
    "--ratios", help="Tracing: compression ratios of the grid, comma-separated; each gets a fresh press and all prefills.",
    rich_help_panel=PANEL)]
DecodeSteps = Annotated[int, typer.Option(
    "--decode-steps", help="Tracing: greedy decoding steps after each prefill, inside `with press(model)` (0: none).",
    rich_help_panel=PANEL)]
ModelPath = Annotated[Optional[str], typer.Option(
    "--model", help="Tracing: local Hugging Face model folder (never downloads).", rich_help_panel=PANEL)]
Device = Annotated[str, typer.Option("--device", help="Tracing: torch device.", rich_help_panel=PANEL)]
Dtype = Annotated[str, typer.Option("--dtype", help="Tracing: float32, bfloat16 or float16.", rich_help_panel=PANEL)]
Timeout = Annotated[float, typer.Option(
    "--timeout", help="Tracing: CPU seconds a press may use before it is killed (idle that long, or 3x that in "
    "wall time: killed too).", rich_help_panel=PANEL)]
CompareReference = Annotated[bool, typer.Option(
    "--compare-reference",
    help="Tracing: also run the reference ChunkKVReusePress with the same scorer, ratio and chunk length.",
    rich_help_panel=PANEL)]

MemoryLimit = Annotated[Optional[str], typer.Option(
    "--memory-limit", metavar="SIZE",
    help=f"Tracing: memory one press may allocate (RLIMIT_AS, CPU only): 4G, 512M, 25% of RAM, or 0 for no limit. "
    f"Default: {DEFAULT_MEMORY_SHARE:.0%} of RAM. Past it the press is reported as a crash.",
    rich_help_panel=PANEL)]
# Shared by every command (the static path's internal errors too): keep this definition the only one.
Debug = Annotated[bool, typer.Option("--debug", help="Print the traceback of an internal error.")]

DEFAULTS = {"arch": "llama", "layers": 8, "tokens": DEFAULT_TOKENS, "device": "cpu", "dtype": "float32",
            "timeout": DEFAULT_TIMEOUT_S, "ratios": ",".join(f"{r:g}" for r in DEFAULT_RATIOS),
            "decode_steps": DEFAULT_DECODE_STEPS}


def parse_ratios(text: str) -> tuple[float, ...]:
    """``"0.5,0.8"`` → ``(0.5, 0.8)``; a bad value gives ``()``, which the options reject in one line."""
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        return ()


def fail(message: str) -> typer.Exit:
    """Print ``error: MESSAGE`` on stderr; the caller raises the returned exit (code 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(BAD_INPUT)


def trace_options(
    *, arch: str, layers: int, tokens: int, model: str | None, device: str, dtype: str, timeout: float,
    press: str | None, compare_reference: bool, memory_limit: str | None = None, long_tokens: int | None = None,
    ratios: str = DEFAULTS["ratios"], decode_steps: int = DEFAULT_DECODE_STEPS,
) -> TraceOptions:
    """The options of one trace; exit 2 with one line on a bad ``--memory-limit``."""
    from ..tracer.options import TraceOptions, default_memory_limit, parse_memory_limit

    try:
        limit = default_memory_limit() if memory_limit is None else parse_memory_limit(memory_limit)
    except ValueError as error:
        raise fail(f"--memory-limit {memory_limit[:40]!r}: {error}") from None
    return TraceOptions(arch=arch, layers=layers, tokens=tokens, model_path=model, device=device, dtype=dtype,
                        timeout=timeout, press_expr=press, compare_reference=compare_reference, memory_limit=limit,
                        long_tokens=long_tokens, ratios=parse_ratios(ratios), decode_steps=decode_steps)


def require_trace_extra(alternative: str = "") -> None:
    """Exit 2 with one line naming the missing package and the install command (no torch, say)."""
    from ..tracer.options import missing_trace_extra

    problem = missing_trace_extra()
    if problem is not None:
        raise fail(problem + alternative)


def print_tracebacks(tracebacks: list[str], debug: bool) -> None:
    """The tracebacks of the tracer's internal errors, on stderr, only under ``--debug``."""
    if debug:
        for text in tracebacks:
            typer.echo(text.rstrip("\n"), err=True)


@contextmanager
def internal_errors(what: str, debug: bool) -> Iterator[None]:
    """Turn a bug of kvaudit into one line naming ``what`` and exit code 2 (never 1); the traceback under --debug."""
    try:
        yield
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as error:  # noqa: BLE001 - any bug: one line, never a traceback by default
        from .output import output_closed

        if isinstance(error, BrokenPipeError) and output_closed():
            raise  # the reader of our output has gone (`| head`): cli/output.py ends the run quietly
        from ..source import error_line, printable

        what = printable(what if len(what) <= 300 else what[:299] + "…")  # 5,000 characters of target: cut
        text = error_line(error, 300)
        hint = "traceback below" if debug else "run with --debug for the traceback"
        typer.echo(f"error: {what}: internal error in kvaudit: {text} ({hint})", err=True)
        if debug:
            typer.echo(traceback.format_exc().rstrip("\n"), err=True)
        raise typer.Exit(BAD_INPUT) from None

"""The options ``check``, ``trace`` and ``report`` share, each declared once here.

Two groups are added to a command by :func:`with_options`: the files group (what is read: excludes,
``.gitignore``, size cap, configuration, ``--claim``) and the tracer group (the tiny model, the grid,
the limits). The command receives each group as one object (:class:`FileFlags`, :class:`TraceFlags`)
instead of a dozen parameters, so no command lists them again.

Plain typer and stdlib: building options must not import torch, nor the tracer's package
(``kvaudit --help`` shows these options): what the tracer provides is imported inside the
functions that use it.
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..defaults import (
    DEFAULT_DECODE_STEPS,
    DEFAULT_MAX_FILE_BYTES,
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
    "--model", help="Tracing: a local Hugging Face model folder (never downloads), or 'trained': kvaudit's tiny "
    "trained model, whose held-out text gives the prompts.", rich_help_panel=PANEL)]
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

@dataclass(frozen=True)
class TraceFlags:
    """The tracer group, as the command line gave it (``--press``, the model, the grid, the limits)."""

    press: PressExpr = None
    arch: Arch = "llama"
    layers: Layers = 8
    tokens: Tokens = DEFAULT_TOKENS
    long_tokens: LongTokens = None
    ratios: Ratios = ",".join(f"{r:g}" for r in DEFAULT_RATIOS)
    decode_steps: DecodeSteps = DEFAULT_DECODE_STEPS
    model: ModelPath = None
    device: Device = "cpu"
    dtype: Dtype = "float32"
    timeout: Timeout = DEFAULT_TIMEOUT_S
    compare_reference: CompareReference = False
    memory_limit: MemoryLimit = None

    def options(self) -> TraceOptions:
        """The options of one trace; exit 2 with one line on a bad ``--memory-limit``."""
        from ..tracer.options import TraceOptions, default_memory_limit, parse_memory_limit

        try:
            limit = default_memory_limit() if self.memory_limit is None else parse_memory_limit(self.memory_limit)
        except ValueError as error:
            raise fail(f"--memory-limit {self.memory_limit[:40]!r}: {error}") from None
        return TraceOptions(arch=self.arch, layers=self.layers, tokens=self.tokens, model_path=self.model,
                            device=self.device, dtype=self.dtype, timeout=self.timeout, press_expr=self.press,
                            compare_reference=self.compare_reference, memory_limit=limit,
                            long_tokens=self.long_tokens, ratios=parse_ratios(self.ratios),
                            decode_steps=self.decode_steps)


FILES = "Files and rules"


@dataclass(frozen=True)
class FileFlags:
    """The files group: what a run reads (walks, excludes, size cap), its configuration and ``--claim``."""

    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOBS", help="Globs (.gitignore syntax) to skip when walking folders; replaces the "
        "config's and the defaults.", rich_help_panel=FILES)] = None
    extend_exclude: Annotated[Optional[list[str]], typer.Option(
        "--extend-exclude", metavar="GLOBS", help="Globs to skip as well (added to the config's and the defaults).",
        rich_help_panel=FILES)] = None
    force_exclude: Annotated[Optional[bool], typer.Option(
        "--force-exclude/--no-force-exclude", help="Apply the excludes to files named on the command line too "
        "(pre-commit passes every file by name).", show_default=False, rich_help_panel=FILES)] = None
    respect_gitignore: Annotated[Optional[bool], typer.Option(
        "--respect-gitignore/--no-respect-gitignore", help="Skip what .gitignore files ignore when walking "
        "folders (default: yes).", show_default=False, rich_help_panel=FILES)] = None
    max_file_size: Annotated[Optional[str], typer.Option(
        "--max-file-size", metavar="SIZE", help=f"Refuse files larger than this (16MiB, 10MB, bytes; 0: no cap). "
        f"Default: the config's, else {DEFAULT_MAX_FILE_BYTES >> 20}MiB.", rich_help_panel=FILES)] = None
    claim: Annotated[Optional[list[str]], typer.Option(
        "--claim", metavar="CLAIM", help="Force a claim (e.g. layer-index-reuse) onto presses that cite no paper.",
        rich_help_panel=FILES)] = None
    config: Annotated[Optional[Path], typer.Option(
        "--config", metavar="FILE", help="Configuration file (kvaudit.toml, or pyproject.toml with [tool.kvaudit]). "
        "Default: the nearest one from the working directory up.", dir_okay=False)] = None
    no_config: Annotated[bool, typer.Option("--no-config", help="Ignore every configuration file.")] = False


REPRO = "Reproductions"


@dataclass(frozen=True)
class ReproFlags:
    """Standalone reproductions of the findings (``trace`` and ``report``)."""

    repro_dir: Annotated[Optional[Path], typer.Option(
        "--repro-dir", metavar="DIR", file_okay=False,
        help="Write, for each violated claim, accepted deviation and defect, DIR/<press>-<claim>.py (a script that "
        "imports only torch, transformers and kvpress, and exits 1 while the rule is broken) and DIR/<press>-<claim>.md "
        "(an issue draft for the press's tracker).", rich_help_panel=REPRO)] = None

    def refuse_unsupported(self, options: TraceOptions | None) -> None:
        """Exit 2 before any work when the reproductions cannot stand for the trace: the scripts rebuild the
        random tiny model from its config, which the trained model's findings were not measured on."""
        if self.repro_dir is not None and options is not None and options.trained:
            raise fail("--repro-dir: the scripts rebuild kvaudit's random tiny model, not --model trained; "
                       "trace without --model trained to write them")

    def write(self, result: Any, options: TraceOptions | None, reread: Any = None) -> list[Any]:
        """Write the reproductions of ``result`` (nothing without ``--repro-dir`` or a trace); exit 2 with one line
        when DIR cannot be written. ``reread``: the run's file options when its static rules were off (``trace``):
        the drafts then read the presses' source lines again."""
        if self.repro_dir is None or options is None or result.traced is None:
            return []
        from ..repro import write_reproductions

        try:
            return write_reproductions(result, self.repro_dir, options, reread)
        except OSError as error:
            raise fail(f"--repro-dir {self.repro_dir}: cannot write: {error.strerror or error}") from None


def with_options(defaults: dict[str, Any] | None = None, **groups: type) -> Callable[[Callable], Callable]:
    """Add each group's options to a command, which receives the group as one object under the keyword given.

    ``@with_options(files=FileFlags, trace=TraceFlags)`` on ``def check(..., files: FileFlags, trace: TraceFlags)``:
    typer sees every option of both groups (declared once, in the group's dataclass); the command gets
    ``files=FileFlags(...)`` and ``trace=TraceFlags(...)``. ``defaults`` changes a group option's default
    for this command (``report`` compares with the reference press by default).
    """
    import typing

    changed = dict(defaults or {})

    def decorate(command: Callable) -> Callable:
        own = inspect.signature(command, eval_str=True)
        added: list[inspect.Parameter] = []
        for group in groups.values():
            hints = typing.get_type_hints(group, include_extras=True)
            added += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name],
                                        default=changed.get(f.name, f.default)) for f in fields(group)]
        parameters = [p for p in own.parameters.values() if p.name not in groups] + added

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            for keyword, group in groups.items():
                kwargs[keyword] = group(**{f.name: kwargs.pop(f.name) for f in fields(group)})
            return command(**kwargs)

        del wrapper.__wrapped__  # typer reads the signature below, not the command's
        wrapper.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper

    return decorate


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

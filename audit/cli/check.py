"""``kvaudit check``: the static audit (plus, on request, the tracer's view beside it)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

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
    require_trace_extra,
    trace_options,
)
from ..config import Config, ConfigError, discover, rule_ids_option
from ..engine import CheckOptions, run_check
from ..exitcodes import BAD_INPUT, check_exit_code
from ..model import AuditResult
from ..targets import DEFAULT_TARGET


class CheckFormat(str, Enum):
    terminal = "terminal"
    json = "json"
    sarif = "sarif"
    github = "github"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


def render(result: AuditResult, output_format: CheckFormat) -> str:
    """``result`` as text in one of the machine formats (json, sarif, github)."""
    if output_format is CheckFormat.json:
        from ..reporters.json_report import render_json

        return render_json(result)
    if output_format is CheckFormat.sarif:
        from ..reporters.sarif import render_sarif

        return render_sarif(result)
    if output_format is CheckFormat.github:
        from ..reporters.github import render_github

        return render_github(result)
    raise ValueError(f"{output_format.value} is not a text format")


def emit(result: AuditResult, output_format: CheckFormat) -> None:
    """Write ``result`` to stdout in ``output_format``."""
    if output_format is not CheckFormat.terminal:
        sys.stdout.write(render(result, output_format))
    else:
        from ..reporters.terminal import render_terminal

        render_terminal(result, Console(), errors=Console(stderr=True))


def static_options(
    claim: list[str], select: list[str] | None, ignore: list[str] | None, config: Path | None, no_config: bool
) -> tuple[CheckOptions, Config]:
    """Merge the command-line flags over the configuration file; exit 2 on a bad claim or file."""
    from ..claims import known_claims

    unknown = sorted(set(claim) - known_claims())
    if unknown:
        typer.echo(f"error: unknown claim {', '.join(unknown)}; known: {', '.join(sorted(known_claims()))}", err=True)
        raise typer.Exit(BAD_INPUT)
    try:
        settings = Config() if no_config else discover(config)
        # A typo in --select or --ignore must not quietly switch rules off and open the gate.
        select = rule_ids_option(select, "--select") if select else None
        ignore = rule_ids_option(ignore, "--ignore") if ignore else None
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(BAD_INPUT) from None
    # Command-line flags override the file.
    options = CheckOptions(
        forced_claims=list(claim),
        select=select or settings.select,
        ignore=ignore or list(settings.ignore or []),
        per_path_ignores=dict(settings.per_path_ignores),
        claim_overrides=list(settings.claim_overrides),
        config_root=settings.root,
        press_bases=tuple(settings.press_bases),
    )
    return options, settings


@app.command()
def check(
    targets: list[str] = typer.Argument(
        None, help=f"Files, directories or dotted module names. Default: {DEFAULT_TARGET}."
    ),
    output_format: CheckFormat = typer.Option(CheckFormat.terminal, "--format", "-f", help="Output format."),
    fail_on: FailOn = typer.Option(
        None, "--fail-on", help="Lowest severity that makes the exit code 1 (default: the config's, else error)."
    ),
    claim: list[str] = typer.Option([], "--claim", help="Force a claim (e.g. layer-index-reuse) onto presses that cite no paper."),
    select: list[str] = typer.Option(None, "--select", help="Run only these rule ids (or prefixes); replaces the config's."),
    ignore: list[str] = typer.Option(None, "--ignore", help="Skip these rule ids (or prefixes); replaces the config's."),
    config: Path = typer.Option(
        None, "--config", help="Configuration file (kvaudit.toml, or pyproject.toml with [tool.kvaudit]). "
        "Default: the nearest one from the working directory up.", dir_okay=False,
    ),
    no_config: bool = typer.Option(False, "--no-config", help="Ignore every configuration file."),
    output_json: Path = typer.Option(None, "--output-json", help="Also write the JSON report to this file.", dir_okay=False),
    output_sarif: Path = typer.Option(None, "--output-sarif", help="Also write SARIF 2.1.0 to this file.", dir_okay=False),
    output_github: Path = typer.Option(
        None, "--output-github", help="Also write GitHub annotations to this file.", dir_okay=False
    ),
    trace: bool = typer.Option(False, "--trace", help="Also run each press on a tiny model and show both verdicts."),
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
    debug: Debug = False,
) -> None:
    """Audit press source statically: claims, verdicts, line-level evidence and findings."""
    options, settings = static_options(claim, select, ignore, config, no_config)
    threshold = fail_on.value if fail_on is not None else settings.fail_on or FailOn.error.value
    tracing = None
    if trace or compare_reference:
        require_trace_extra()  # before any work: no torch means no trace, said once, exit 2
        tracing = trace_options(arch=arch, layers=layers, tokens=tokens, model=model, device=device, dtype=dtype,
                                timeout=timeout, press=press, compare_reference=compare_reference,
                                memory_limit=memory_limit)
    chosen = list(targets) if targets else [DEFAULT_TARGET]
    result = run_check(chosen, options)
    for note in result.notes:  # e.g. why --claim left a press alone; stderr keeps stdout machine-readable
        typer.echo(f"note: {note}", err=True)
    if tracing is not None:
        # Imported here: the tracer's worker imports torch, the static path never does.
        from ..tracer import attach_traces

        with internal_errors(", ".join(chosen), debug):
            print_tracebacks(attach_traces(result, tracing), debug)
    emit(result, output_format)
    for path, file_format in ((output_json, CheckFormat.json), (output_sarif, CheckFormat.sarif),
                              (output_github, CheckFormat.github)):
        if path is not None:
            try:
                path.write_text(render(result, file_format), encoding="utf-8")
            except OSError as err:
                typer.echo(f"error: cannot write {path}: {err.strerror or err}", err=True)
                raise typer.Exit(BAD_INPUT) from None
    raise typer.Exit(check_exit_code(result, threshold))

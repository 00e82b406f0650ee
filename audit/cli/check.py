"""``kvaudit check``: the static audit (plus, on request, the tracer's view beside it).

Conventions follow Ruff and Semgrep: ``--select``/``--ignore`` take comma lists and
prefixes, ``--format concise`` prints one ``path:line:col: ID message`` line per finding,
``--exit-zero``, ``--quiet``, ``--statistics``, ``--baseline``/``--write-baseline``,
``--exclude``/``--extend-exclude``/``--force-exclude`` and ``.gitignore`` in walks.
The engine, rich and the reporters are imported inside the command (start-up cost).
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from . import app
from .options import (
    BAD_INPUT,
    Debug,
    FileFlags,
    TraceFlags,
    internal_errors,
    print_tracebacks,
    require_trace_extra,
    with_options,
)
from ..defaults import DEFAULT_MAX_FILE_BYTES, DEFAULT_TARGET

if TYPE_CHECKING:
    from ..config import Config
    from ..engine import CheckOptions
    from ..model import AuditResult
    from ..pipeline import RunOutcome, Stages

FILTERS = "Files and rules"


class CheckFormat(str, Enum):
    terminal = "terminal"
    concise = "concise"
    json = "json"
    sarif = "sarif"
    github = "github"


class FailOn(str, Enum):
    error = "error"
    warning = "warning"
    info = "info"
    never = "never"


def render(result: AuditResult, output_format: CheckFormat, quiet: bool = False) -> str:
    """``result`` as text in one of the text formats (concise, json, sarif, github)."""
    if output_format is CheckFormat.concise:
        from ..reporters.concise import render_concise

        return render_concise(result, quiet)
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


def _say(kind: str, message: str) -> None:
    """One ``kind: message`` line on stderr; a control character in a file name never gets through raw."""
    from ..source import printable

    typer.echo(printable(f"{kind}: {message}"), err=True)


def _print_problems(result: AuditResult) -> None:
    """Targets that could not be audited and warnings about the run, one line each on stderr."""
    for status in result.files:
        if status.status == "error":
            _say("error", status.message or status.path)
    for warning in result.warnings:
        _say("warning", warning)


def emit(result: AuditResult, output_format: CheckFormat, quiet: bool = False, statistics: bool = False) -> None:
    """Write ``result`` to stdout in ``output_format`` (or its per-rule counts); problems go to stderr."""
    if statistics:
        from ..reporters.statistics import render_statistics, render_statistics_json

        _print_problems(result)
        as_json = output_format is CheckFormat.json
        sys.stdout.write(render_statistics_json(result) if as_json else render_statistics(result))
    elif output_format is CheckFormat.terminal:
        from ..reporters.console import console
        from ..reporters.terminal import render_terminal

        render_terminal(result, console(), errors=console(stderr=True), quiet=quiet)
    else:
        _print_problems(result)  # the one line a shell user sees, whatever the format on stdout
        sys.stdout.write(render(result, output_format, quiet))


def _usage_error(message: str) -> typer.Exit:
    _say("error", message)
    return typer.Exit(BAD_INPUT)


def static_options(files: FileFlags, select: list[str] | None = None, ignore: list[str] | None = None,
                   static_rules: bool = True) -> tuple[CheckOptions, Config]:
    """Merge the command-line flags over the configuration file; exit 2 on a bad claim, flag or file.

    Without ``static_rules`` (``kvaudit trace``) the rule selection of the configuration does not
    apply: the trace's findings (KVA301-303) decide its exit code whatever ``select`` says.
    """
    from . import require_working_directory

    require_working_directory()  # first: the configuration is looked for from there
    from ..claims import known_claims
    from ..config import Config, ConfigError, discover, glob_option, parse_size, rule_ids_option, split_commas
    from ..engine import CheckOptions
    from ..targets import DEFAULT_EXCLUDE, WalkSettings

    claim = list(files.claim or [])
    unknown = sorted(set(claim) - known_claims())
    if unknown:
        raise _usage_error(f"unknown claim {', '.join(unknown)}; known: {', '.join(sorted(known_claims()))}")
    try:
        settings = Config() if files.no_config else discover(files.config)
        # A typo in --select or --ignore must not quietly switch rules off and open the gate.
        select = rule_ids_option(split_commas(select), "--select") if select else None
        ignore = rule_ids_option(split_commas(ignore), "--ignore") if ignore else None
        exclude = glob_option(files.exclude, "--exclude")
        extend_exclude = glob_option(files.extend_exclude, "--extend-exclude")
        cap = settings.max_file_size
        if files.max_file_size is not None:
            try:
                cap = parse_size(files.max_file_size)
            except ValueError as err:
                raise ConfigError(f"--max-file-size: {err}") from None
    except ConfigError as err:
        raise _usage_error(str(err)) from None
    for warning in settings.warnings:
        _say("warning", warning)
    walk = WalkSettings(
        exclude=tuple(exclude if exclude is not None else settings.exclude if settings.exclude is not None
                      else DEFAULT_EXCLUDE),
        extend_exclude=(*settings.extend_exclude, *(extend_exclude or ())),
        respect_gitignore=next(v for v in (files.respect_gitignore, settings.respect_gitignore, True) if v is not None),
        force_exclude=next(v for v in (files.force_exclude, settings.force_exclude, False) if v is not None),
        root=settings.root,
    )
    # Command-line flags override the file.
    options = CheckOptions(
        forced_claims=claim,
        select=select if select is not None else settings.select if static_rules else None,
        ignore=ignore or list(settings.ignore or []) if static_rules else [],
        per_path_ignores=dict(settings.per_path_ignores) if static_rules else {},
        claim_overrides=list(settings.claim_overrides),
        config_root=settings.root,
        press_bases=tuple(settings.press_bases),
        walk=walk,
        max_file_bytes=cap if cap is not None else DEFAULT_MAX_FILE_BYTES,
    )
    nothing = _no_rule_warning(options, settings, select_given=select is not None,
                               ignore_given=ignore is not None) if static_rules else None
    if nothing is not None:
        _say("warning", nothing)
    return options, settings


def _no_rule_warning(options: CheckOptions, settings: Config, *, select_given: bool, ignore_given: bool) -> str | None:
    """Why no rule is left to run (the gate could never close), from the rule set in effect; None when some are."""
    from ..engine import rules_left
    from ..globs import matches_every_file
    from ..source import display_path

    if rules_left(options):
        return None
    shown = display_path(settings.path) if settings.path is not None else "the configuration"
    prefix = "tool.kvaudit." if settings.path is not None and settings.path.name != "kvaudit.toml" else ""
    if options.select == [] and not select_given:
        return (f"{shown}: {prefix}select = [] selects no rule: kvaudit will report no finding "
                "(remove the key to run every rule)")
    causes = []
    if options.ignore:
        causes.append(f"--ignore {','.join(options.ignore)}" if ignore_given
                      else f"{shown}: {prefix}ignore = {options.ignore}")
    causes += [f'{shown}: {prefix}per-path-ignores "{glob}" = {codes}'
               for glob, codes in options.per_path_ignores.items() if matches_every_file(glob)]
    return f"no rule is left to run ({'; '.join(causes)}): kvaudit will report no finding"


def _write_outputs(result: AuditResult, outputs: tuple[tuple[Path | None, CheckFormat], ...]) -> None:
    """``--output-json``/``--output-sarif``/``--output-github``: each requested file; exit 2 if one cannot be written."""
    for path, file_format in outputs:
        if path is not None:
            try:
                path.write_text(render(result, file_format), encoding="utf-8")
            except OSError as err:
                raise _usage_error(f"cannot write {path}: {err.strerror or err}") from None


def _baseline(result: AuditResult, path: Path, write: bool, quiet: bool) -> int | None:
    """Write the baseline (returns the exit code), or drop the findings it holds (returns None)."""
    from ..baseline import BaselineError, apply_baseline, load_baseline, write_baseline

    if write:
        try:
            count = write_baseline(result, path)
        except OSError as err:
            raise _usage_error(f"cannot write {path}: {err.strerror or err}") from None
        _print_problems(result)
        _say("kvaudit", f"wrote {count} finding(s) to the baseline {path}")
        return BAD_INPUT if result.has_errors else 0
    try:
        keys = load_baseline(path)
    except BaselineError as err:
        raise _usage_error(str(err)) from None
    applied = apply_baseline(result, keys, path)
    if not quiet and (applied.hidden or applied.stale):
        fixed = f"; {applied.stale} baseline entr{'y' if applied.stale == 1 else 'ies'} no longer found" \
            if applied.stale else ""
        _say("kvaudit", f"{applied.hidden} finding(s) in the baseline {path} not shown{fixed}")
    return None


def run_pipeline(targets: list[str], options: CheckOptions, settings: Config, stages: Stages, debug: bool,
                 progress: object | None = None) -> RunOutcome:
    """The pipeline over ``targets`` (``--debug`` prints the tracebacks of kvaudit's own failures)."""
    from ..pipeline import RunSettings, run

    with internal_errors(", ".join(targets), debug):
        outcome = run(RunSettings(targets, options, stages, settings.acceptances), progress)
    print_tracebacks(outcome.tracebacks, debug)
    return outcome


def tracing(trace: bool, flags: TraceFlags, alternative: str = "") -> Stages:
    """The stages of a static run, with the trace stage when asked (the trace extra checked first: exit 2 without it)."""
    from ..pipeline import Stages

    if not trace:
        return Stages()
    require_trace_extra(alternative)  # before any work: no torch means no trace, said once, exit 2
    return Stages(trace=flags.options())


@app.command()
@with_options(files=FileFlags, trace_flags=TraceFlags)
def check(
    targets: list[str] = typer.Argument(
        None, metavar="TARGET", help=f"Files, directories or dotted module names (file.py::Class for one class). "
        f"Default: {DEFAULT_TARGET}."
    ),
    output_format: CheckFormat = typer.Option(
        CheckFormat.terminal, "--format", "-f", metavar="FORMAT",
        help="terminal (rich), concise (one `path:line:col: ID message` line per finding), json, "
        "sarif or github.",
    ),
    fail_on: FailOn = typer.Option(
        None, "--fail-on", metavar="SEVERITY", help="error, warning, info or never: the lowest severity that makes the exit code 1 (default: the config's, else error)."
    ),
    exit_zero: bool = typer.Option(False, "--exit-zero", help="Exit 0 even when there are findings (bad input still exits 2)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print the findings and errors only: no press overview, no summary."),
    statistics: bool = typer.Option(False, "--statistics", help="Print how many findings each rule produced instead of the findings."),
    select: Optional[list[str]] = typer.Option(
        None, "--select", metavar="CODES", help="Run only these rule ids or prefixes (comma-separated or repeated: KVA101,KVA2); "
        "replaces the config's.", rich_help_panel=FILTERS),
    ignore: Optional[list[str]] = typer.Option(
        None, "--ignore", metavar="CODES", help="Skip these rule ids or prefixes (comma-separated or repeated); replaces the config's.",
        rich_help_panel=FILTERS),
    baseline: Optional[Path] = typer.Option(
        None, "--baseline", metavar="FILE", dir_okay=False,
        help="Report and fail only on findings this baseline file does not hold."),
    write_baseline: bool = typer.Option(
        False, "--write-baseline", help="Write the current findings to the --baseline FILE and exit 0 "
        "(--output-json/--output-sarif/--output-github files are written too, with every finding)."),
    output_json: Optional[Path] = typer.Option(None, "--output-json", metavar="FILE", help="Also write the JSON report to this file.", dir_okay=False),
    output_sarif: Optional[Path] = typer.Option(None, "--output-sarif", metavar="FILE", help="Also write SARIF 2.1.0 to this file.", dir_okay=False),
    output_github: Optional[Path] = typer.Option(
        None, "--output-github", metavar="FILE", help="Also write GitHub annotations to this file.", dir_okay=False
    ),
    trace: bool = typer.Option(False, "--trace", help="Also run each press on a tiny model and show both verdicts."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, metavar="N",
                                       help="Worker processes for large runs (default: every core)."),
    cache_dir: Optional[Path] = typer.Option(
        None, "--cache-dir", metavar="DIR", file_okay=False, envvar="KVAUDIT_CACHE_DIR",
        help="Where to keep the cache (default: .kvaudit_cache in the project root)."),
    no_cache: bool = typer.Option(False, "--no-cache", envvar="KVAUDIT_NO_CACHE", help="Neither read nor write the cache."),
    debug: Debug = False,
    *,
    files: FileFlags,
    trace_flags: TraceFlags,
) -> None:
    """Audit press source statically: claims, verdicts, line-level evidence and findings."""
    from ..exitcodes import FINDINGS, OK, exit_code

    if write_baseline and baseline is None:
        raise _usage_error("--write-baseline needs --baseline FILE (the file to write)")
    options, settings = static_options(files, select, ignore)
    threshold = fail_on.value if fail_on is not None else settings.fail_on or FailOn.error.value
    stages = tracing(trace or trace_flags.compare_reference, trace_flags)
    chosen = list(targets) if targets else [DEFAULT_TARGET]
    from ..cache import default_cache_dir
    from ..progress import terminal_progress

    options.debug, options.jobs = debug, jobs
    options.cache_dir = None if no_cache else cache_dir or default_cache_dir(settings.root)
    result = run_pipeline(chosen, options, settings, stages, debug, terminal_progress()).result
    for note in result.notes:  # e.g. why --claim left a press alone; stderr keeps stdout machine-readable
        _say("note", note)
    outputs = ((output_json, CheckFormat.json), (output_sarif, CheckFormat.sarif), (output_github, CheckFormat.github))
    if baseline is not None:
        if write_baseline:  # the report files asked for are written too, with every finding of the run
            with internal_errors(", ".join(chosen), debug):
                _write_outputs(result, outputs)
        written = _baseline(result, baseline, write_baseline, quiet)
        if written is not None:
            raise typer.Exit(written)
    with internal_errors(", ".join(chosen), debug):  # a reporter's bug: one line, exit 2, never 1
        emit(result, output_format, quiet, statistics)
        _write_outputs(result, outputs)
    code = exit_code(result, threshold)
    raise typer.Exit(OK if exit_zero and code == FINDINGS else code)

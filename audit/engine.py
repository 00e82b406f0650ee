"""The static audit: targets in, one :class:`AuditResult` out.

Steps: expand targets into files, read and parse each (a bad file becomes an error
status, never an exception), index classes across the run, then for each press find its
claims, run the flow pass, judge the claimed mechanisms and apply the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .analysis.index import ClassInfo, PressBase, ProjectIndex
from .analysis.reuse import analyse_reuse
from .claims import claims_for
from .config import ClaimOverride, apply_claim_overrides, ignored_for_path
from .inherited import unread_base_warning
from .model import LAYER_INDEX_REUSE, AuditResult, FileStatus, PressReport
from .rule import PressContext, Rule, all_rules, rule_by_id
from .source import DEFAULT_MAX_FILE_BYTES, EmptySourceError, SourceError, SourceFile, display_path, load_source
from .suppression import apply_suppressions
from .targets import WalkSettings, expand_targets


@dataclass
class CheckOptions:
    """What the user asked for; the configuration file fills the same fields."""

    forced_claims: list[str] = field(default_factory=list)
    select: list[str] | None = None  # rule ids (or prefixes) to run; None means all
    ignore: list[str] = field(default_factory=list)
    # From the configuration file (audit/config.py): glob -> rule ids (or prefixes) off for
    # matching files; claim overrides; the folder globs are relative to (None: the cwd).
    per_path_ignores: dict[str, list[str]] = field(default_factory=dict)
    claim_overrides: list[ClaimOverride] = field(default_factory=list)
    config_root: Path | None = None
    # Press-like classes the project declares (`[[press-bases]]`): audited as presses are.
    press_bases: tuple[PressBase, ...] = ()
    walk: WalkSettings | None = None  # excludes, .gitignore (None: the defaults)
    max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES  # the size cap; None or 0: none


def _selected(rule: type[Rule], options: CheckOptions) -> bool:
    def matches(prefixes: list[str]) -> bool:
        return any(rule.id.startswith(prefix.upper()) for prefix in prefixes)

    return (options.select is None or matches(options.select)) and not matches(options.ignore)


def audit_press(index: ProjectIndex, press: ClassInfo, options: CheckOptions,
                notes: list[str] | None = None) -> PressReport:
    """Claims, verdicts, evidence and findings of one press; ``notes`` gets why ``--claim`` left it alone."""
    report = PressReport(name=press.name, path=press.source.display, line=press.line)
    report.claims = claims_for(press, index, options.forced_claims, notes)
    report.claims = apply_claim_overrides(press.name, report.path, press.line, report.claims,
                                          options.claim_overrides, options.config_root)
    context = PressContext(press=press, index=index, claims=report.claims)
    if any(c.id == LAYER_INDEX_REUSE for c in report.claims):
        context.reuse = analyse_reuse(index, press, context.flow)
        report.verdicts[LAYER_INDEX_REUSE] = context.reuse.verdict
        report.evidence = list(dict.fromkeys(context.reuse.evidence))  # each item once
    for rule in all_rules():
        if _selected(rule, options):
            report.findings.extend(rule().check(context))
    if options.per_path_ignores:
        report.findings = [f for f in report.findings
                           if not ignored_for_path(f.rule, f.path, options.per_path_ignores, options.config_root)]
    return report


def rule_active(rule_id: str, path: str, options: CheckOptions) -> bool:
    """Whether rule ``rule_id`` runs on the file shown as ``path`` (selected, not ignored for it)."""
    rule = rule_by_id(rule_id)
    return (rule is not None and _selected(rule, options)
            and not ignored_for_path(rule.id, path, options.per_path_ignores, options.config_root))


def run_check(targets: list[str], options: CheckOptions | None = None) -> AuditResult:
    """Audit ``targets`` statically. Never raises for bad input: it lands in ``files``."""
    options = options or CheckOptions()
    result = AuditResult()
    paths, target_errors = expand_targets(targets, options.walk)
    result.files.extend(FileStatus(path=e.target, status="error", message=e.message) for e in target_errors)

    sources: list[SourceFile] = []
    for path in paths:
        display = display_path(path)
        try:
            sources.append(load_source(path, display, options.max_file_bytes))
        except EmptySourceError:
            # Never an error, named or found: pre-commit passes every empty `__init__.py` it sees.
            result.files.append(FileStatus(path=display, status="ok", message=f"{display}: empty file"))
        except SourceError as err:
            result.files.append(FileStatus(path=display, status="error", message=f"{display}: {err}"))

    index = ProjectIndex(sources, options.press_bases)
    presses = index.presses()
    warning = unread_base_warning(index, presses)
    if warning is not None:
        result.warnings.append(warning)
    failed: set[str] = set()
    for press in presses:
        try:
            result.presses.append(audit_press(index, press, options, result.notes))
        except RecursionError:
            failed.add(press.source.display)
            result.files.append(FileStatus(press.source.display, "error",
                                           f"{press.source.display}: too deeply nested to analyse ({press.name})"))
        except SourceError as err:  # libcst, parsing lazily, refused what CPython accepted
            failed.add(press.source.display)
            result.files.append(FileStatus(press.source.display, "error", f"{press.source.display}: {err}"))
    pressed = {p.path for p in result.presses}
    for source in sources:
        if source.display in failed:
            continue
        message = None if source.display in pressed else f"{source.display}: no press classes" + "".join(
            f"; {cls} derives from {base}, which the installed kvpress does not have, so it is not audited"
            for cls, base in index.unknown_bases(source))
        result.files.append(FileStatus(path=source.display, status="ok", message=message))
    _flag_directories_without_presses(targets, result)
    # Inline `# kvaudit: ignore[...]` comments, once every rule has run (KVA001, KVA002).
    apply_suppressions(result, {s.display: s.text for s in sources if s.display not in failed},
                       lambda rule_id, path: rule_active(rule_id, path, options),
                       lambda rule_id: rule_by_id(rule_id) is not None)
    result.sort()
    return result


def _flag_directories_without_presses(targets: list[str], result: AuditResult) -> None:
    # A directory handed to `check` is expected to hold presses; say so when it holds none.
    for target in targets:
        directory = Path(target)
        if not directory.is_dir():
            continue
        root = display_path(directory)
        prefix = "" if root == "." else root.rstrip("/") + "/"
        if not any(p.path.startswith(prefix) for p in result.presses):
            if not any(f.path == target for f in result.files):
                result.files.append(FileStatus(path=target, status="error", message=f"{target}: no press classes found"))

"""The one pipeline behind ``kvaudit check``, ``kvaudit trace`` and ``kvaudit report``.

Stages, each owned by one module (``docs/architecture.md`` has the picture):

1. **targets**: files, folders, module names and ``::Class`` selectors expand into files, with the
   excludes, ``.gitignore``, ``--force-exclude`` and the configuration honoured alike
   (:func:`select_classes` here, then :mod:`kvaudit.targets`);
2. **index**: presses are found statically (:mod:`kvaudit.analysis.index`);
3. **claims**: each press's claims are decided once, with their origin (:mod:`kvaudit.claims`);
4. **static rules**: evidence, verdicts and findings (:mod:`kvaudit.engine`, ``rules/``), switched
   off for ``kvaudit trace``;
5. **traces**: every press runs on a tiny model (:mod:`kvaudit.tracer`), switched on by ``--trace``,
   ``kvaudit trace`` and ``kvaudit report``; accepted deviations and trace findings follow
   (:mod:`kvaudit.acceptance`);
6. **one result model**: :class:`kvaudit.model.AuditResult`;
7. **reporters**: plain functions of that model (:mod:`kvaudit.reporters`), chosen by the command.

Exit codes come from one rule for every command (:mod:`kvaudit.exitcodes`). Importing this module
never imports torch: the trace stage's worker does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .model import AuditResult, FileStatus

if TYPE_CHECKING:
    from .config import Acceptance
    from .engine import CheckOptions
    from .tracer.options import TraceOptions


@dataclass
class Stages:
    """Which stages run: the static rules (off for ``kvaudit trace``) and the trace (its options, or None)."""

    static_rules: bool = True
    trace: TraceOptions | None = None


@dataclass
class RunSettings:
    """Everything one run needs: what to read, how, which stages, and the configuration's acceptances."""

    targets: list[str]
    check: CheckOptions
    stages: Stages = field(default_factory=Stages)
    acceptances: Sequence[Acceptance] = ()
    progress: bool = True  # progress bars on a terminal's stderr


@dataclass
class RunOutcome:
    """The result model, and the tracebacks of kvaudit's own failures (printed under ``--debug`` only)."""

    result: AuditResult
    tracebacks: list[str] = field(default_factory=list)


def defined_classes(path: Path) -> tuple[str, ...]:
    """Names of the classes ``path`` defines at module level (under ``if``/``try``/``with`` too).

    Read and parsed as the static stage reads files (:func:`kvaudit.source.load_source`); raises its
    :class:`~kvaudit.source.SourceError`.
    """
    import ast

    from .source import display_path, load_source

    names: list[str] = []
    pending: list[ast.stmt] = list(load_source(path, display_path(path)).tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return tuple(names)


def select_classes(targets: Sequence[str]) -> tuple[list[str], dict[Path, set[str]], list[FileStatus]]:
    """Split ``file.py::MyPress`` selectors off the targets.

    Returns the targets to expand, resolved file -> the classes selected in it, and one error per
    selector that names no class of its file (the target is then left out).
    """
    from .source import SourceError, display_path
    from .targets import looks_like_module, resolve_module, split_class_selector

    plain: list[str] = []
    selected: dict[Path, set[str]] = {}
    errors: list[FileStatus] = []
    for target in targets:
        base, class_name = split_class_selector(target)
        if class_name is None:
            plain.append(target)
            continue
        plain.append(base)
        path = Path(base)
        try:
            if not path.exists() and looks_like_module(base):
                path = resolve_module(base) or path
            if path.is_dir():
                errors.append(FileStatus(base, "error", f"{base}: is a directory; ::{class_name} needs a file"))
                plain.pop()
                continue
            if not path.is_file():
                continue  # the target stage says what is wrong with it
            path = path.resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        try:
            classes = defined_classes(path)
        except SourceError:
            continue  # unreadable or not Python: said by the target stage, in check's words
        if class_name not in classes:
            known = ", ".join(classes) if classes else "none"
            errors.append(FileStatus(display_path(path), "error",
                                     f"{base}: no class {class_name!r} (classes defined there: {known})"))
            plain.pop()
            continue
        selected.setdefault(path, set()).add(class_name)
    return list(dict.fromkeys(plain)), selected, errors


def run(settings: RunSettings, progress: object | None = None) -> RunOutcome:
    """Run the stages ``settings`` asks for over its targets; never raises for bad input (it lands in ``files``)."""
    from .engine import named_files, rule_active, run_check

    targets, selected, errors = select_classes(settings.targets)
    options = replace(settings.check, static_rules=settings.stages.static_rules)
    result = run_check(targets, options, progress) if targets else AuditResult()  # type: ignore[arg-type]
    result.files.extend(errors)
    if selected:
        result.presses = [p for p in result.presses
                          if Path(p.path).resolve() not in selected or p.name in selected[Path(p.path).resolve()]]
    outcome = RunOutcome(result)
    trace = settings.stages.trace
    if trace is not None:
        from .acceptance import add_trace_findings
        from .tracer import TraceStage, trace_presses

        stage = TraceStage(trace, selectors=selected, named=named_files(targets), forced=options.forced_claims,
                           overrides=options.claim_overrides, root=options.config_root,
                           press_bases=options.press_bases, progress=settings.progress,
                           label=", ".join(settings.targets))
        outcome.tracebacks = trace_presses(result, stage)
        # Violated claims gate like findings (KVA301, --fail-on applies); accepted ones do not.
        unused = add_trace_findings(result, list(settings.acceptances), lambda rule, path: rule_active(rule, path, options))
        assert result.traced is not None
        result.traced.unused_acceptances = [item.message for item in unused]
    result.sort()
    return outcome

"""The rule base class, in the style of Fixit: id, severity, message, docs and examples.

A rule reads the facts the engine gathered for one press (:class:`PressContext`) and
yields findings. Its ``VALID`` and ``INVALID`` examples are whole press files; the test
suite audits each one and checks that the rule stays quiet on the valid ones and fires
on the invalid ones.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import libcst as cst
else:  # libcst is imported on first use (start-up cost)
    from .lazy_libcst import cst

from . import rules as rules_package
from .analysis.flow import FlowAnalyzer, FlowFacts
from .analysis.index import ClassInfo, ProjectIndex
from .analysis.reuse import ReuseAnalysis
from .model import LAYER_INDEX_REUSE, Claim, Finding, Severity
from .source import SourceFile



@dataclass
class PressContext:
    """Everything rules may read about one press."""

    press: ClassInfo
    index: ProjectIndex
    claims: list[Claim]
    # The static analysis of each claimed mechanism that has one (kvaudit.mechanism), by claim id.
    analyses: dict[str, Any] = field(default_factory=dict)

    @property
    def reuse(self) -> ReuseAnalysis | None:
        """The layer-index-reuse analysis; None when the press does not claim it."""
        return self.analyses.get(LAYER_INDEX_REUSE)

    @cached_property
    def flow(self) -> FlowFacts:
        # The flow pass is the costly part of a check: run it once, and only when asked.
        return FlowAnalyzer(self.index, self.press).run()

    @property
    def source(self) -> SourceFile:
        return self.press.source

    def line_in_press_file(self, source: SourceFile, node: cst.CSTNode) -> int:
        """Line of ``node`` when it lies in the press's file, else the class line."""
        return source.line_of(node) if source is self.source else self.press.line


class Rule:
    """Base class of every rule. Subclasses set the class attributes and ``check``."""

    id: ClassVar[str]
    name: ClassVar[str]
    severity: ClassVar[Severity]
    message: ClassVar[str]  # one-line summary; findings may give a more precise message
    claim: ClassVar[str | None] = None  # the claim this rule audits, if any
    help_url: ClassVar[str | None] = None  # a real web page about the rule, if one exists (SARIF helpUri)
    # A dynamic rule reports what the tracer measured (``kvaudit check --trace``): it finds nothing
    # statically, and its examples are traced with ``EXAMPLE_CONFIG`` as the configuration file.
    dynamic: ClassVar[bool] = False
    EXAMPLE_CONFIG: ClassVar[str] = ""
    VALID: ClassVar[list[str]] = []
    INVALID: ClassVar[list[str]] = []

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        if self.dynamic:
            return iter(())  # filled in by kvaudit.acceptance after tracing
        raise NotImplementedError

    def finding(self, ctx: PressContext, line: int, message: str, path: str | None = None, *,
                node: cst.CSTNode | ast.AST | None = None, source: SourceFile | None = None) -> Finding:
        """A finding at ``line`` of ``path`` (default: the press's file).

        ``node``, of ``source`` (default: the press's file) and of either tree, gives the
        region's columns and end, when it lies on that line of that file.
        """
        shown = path or ctx.source.display
        span = None
        if node is not None and (source or ctx.source).display == shown:
            span = (source or ctx.source).span_of(node)
            span = span if span.line == line else None
        return Finding(rule=self.id, severity=self.severity, line=line, message=message, path=shown,
                       press=ctx.press.name, column=span.column if span else 1,
                       end_line=span.end_line if span else None, end_column=span.end_column if span else None)

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def help_markdown(cls) -> str:
        """The rule's whole documentation as Markdown, with one invalid and one valid example.

        SARIF viewers (GitHub code scanning) show it beside each result: kvaudit has no
        hosted documentation, so the text travels with the log instead of a link.
        """
        docs = re.sub(r"``([^`]+)``", r"`\1`", cls.documentation() or cls.message)
        parts = [f"**{cls.id} {cls.name}** ({cls.severity.value})", docs]
        for title, examples in (("Flagged", cls.INVALID), ("Not flagged", cls.VALID)):
            if examples:
                parts.append(f"{title}:\n\n```python\n{examples[0].strip()}\n```")
        return "\n\n".join(parts) + "\n"


@cache
def all_rules() -> tuple[type[Rule], ...]:
    """Every rule class under ``rules/``, sorted by id."""
    found: dict[str, type[Rule]] = {}
    for module_info in pkgutil.iter_modules(rules_package.__path__):
        module = importlib.import_module(f"{rules_package.__name__}.{module_info.name}")
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, Rule) and value is not Rule and value.__module__ == module.__name__:
                found[value.id] = value
    return tuple(found[key] for key in sorted(found))


def rule_by_id(rule_id: str) -> type[Rule] | None:
    return next((r for r in all_rules() if r.id.upper() == rule_id.upper()), None)

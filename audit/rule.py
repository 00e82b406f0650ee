"""The rule base class, in the style of Fixit: id, severity, message, docs and examples.

A rule reads the facts the engine gathered for one press (:class:`PressContext`) and
yields findings. Its ``VALID`` and ``INVALID`` examples are whole press files; the test
suite audits each one and checks that the rule stays quiet on the valid ones and fires
on the invalid ones.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, cached_property
from typing import ClassVar

import libcst as cst

from . import rules as rules_package
from .analysis.flow import FlowAnalyzer, FlowFacts
from .analysis.index import ClassInfo, ProjectIndex
from .analysis.reuse import ReuseAnalysis
from .model import Claim, Finding, Severity
from .source import SourceFile



@dataclass
class PressContext:
    """Everything rules may read about one press."""

    press: ClassInfo
    index: ProjectIndex
    claims: list[Claim]
    reuse: ReuseAnalysis | None = None  # None when the press does not claim layer-index-reuse

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
    VALID: ClassVar[list[str]] = []
    INVALID: ClassVar[list[str]] = []

    def check(self, ctx: PressContext) -> Iterator[Finding]:
        raise NotImplementedError

    def finding(self, ctx: PressContext, line: int, message: str, path: str | None = None) -> Finding:
        return Finding(rule=self.id, severity=self.severity, line=line, message=message,
                       path=path or ctx.source.display, press=ctx.press.name)

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def help_uri(cls) -> str:
        """An absolute URI of the rule's file, which holds its documentation and examples.

        SARIF wants an absolute URI; kvaudit has no hosted docs, so this points at the
        installed rule file (the full text also travels in SARIF's ``help``).
        """
        return Path(inspect.getfile(cls)).resolve().as_uri()


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

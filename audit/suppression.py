"""Inline suppression: ``# kvaudit: ignore[KVA101] reason``.

A suppression names one or more rule ids, comma-separated, and silences findings of those
rules on its own line; a suppression alone on its line also covers the next code line
(a block of comment lines may stand between). It is applied after the rules ran.

Two meta rules keep suppressions honest:

* KVA002: a suppression without rule ids (``# kvaudit: ignore``) is rejected: it
  suppresses nothing and is reported itself.
* KVA001: a rule id in a suppression that silenced no finding (or names no rule) is
  reported, like Ruff's RUF100. Ids of rules that did not run on the file (deselected,
  or ignored for its path) are not reported.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Callable
from dataclasses import dataclass, field

from .model import AuditResult, Finding
from .source import normalize_line_ends
from .rules.kva001_unused_suppression import UnusedSuppression
from .rules.kva002_bare_suppression import BareSuppression

MARKER = "kvaudit"
_PATTERN = re.compile(r"#\s*kvaudit\s*:\s*ignore\b(?P<ids>\s*\[[^\]]*\])?(?P<reason>.*)$", re.IGNORECASE)
_ID = re.compile(r"^[A-Za-z]+[0-9]+$")


@dataclass
class Suppression:
    """One ``# kvaudit: ignore[...]`` comment."""

    line: int
    column: int
    ids: tuple[str, ...] | None  # None: no bracketed id list at all
    reason: str
    standalone: bool  # the comment is alone on its line
    covers: frozenset[int] = frozenset()  # lines it silences
    used: set[str] = field(default_factory=set)
    text: str = ""


def _comments(text: str) -> list[tuple[int, int, str, bool]]:
    """(line, column, comment, alone on its line) for every comment, found with tokenize."""
    found = []
    try:
        # StringIO splits at "\n" only: a file with "\r" line ends would be one line.
        for token in tokenize.generate_tokens(io.StringIO(normalize_line_ends(text)).readline):
            if token.type == tokenize.COMMENT:
                line, column = token.start
                alone = not token.line[:column].strip()
                found.append((line, column + 1, token.string, alone))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a file that parsed with libcst tokenizes; be safe anyway
    return found


def parse_suppressions(text: str) -> list[Suppression]:
    """Every kvaudit suppression comment of ``text``, with the lines each one covers."""
    if MARKER not in text.lower():
        return []
    comments = _comments(text)
    comment_only = {line for line, _, _, alone in comments if alone}
    found = []
    next_code: dict[int, int] = {}  # a comment-only line -> the first line below its comment block
    for line, column, comment, alone in comments:
        match = _PATTERN.search(comment)
        if not match:
            continue
        raw = match.group("ids")
        ids = None
        if raw is not None:
            ids = tuple(dict.fromkeys(p.strip().upper() for p in raw.strip()[1:-1].split(",") if p.strip()))
        covers = {line}
        if alone:  # the next code line below a block of comment lines
            covers.add(_below_block(line, comment_only, next_code))
        found.append(Suppression(line, column, ids, match.group("reason").strip(), alone, frozenset(covers),
                                 text=comment.strip()))
    return found


def _below_block(line: int, comment_only: set[int], next_code: dict[int, int]) -> int:
    # Memoised per block: a block of k suppression lines costs k steps, not k squared.
    below = line + 1
    walked = []
    while below in comment_only and below not in next_code:
        walked.append(below)
        below += 1
    end = next_code.get(below, below)
    for each in (line, *walked):
        next_code[each] = end
    return end


def apply_suppressions(
    result: AuditResult,
    texts: dict[str, str],
    is_active: Callable[[str, str], bool],
    is_known: Callable[[str], bool],
    on_error: Callable[[str, Exception], None] | None = None,
) -> None:
    """Drop suppressed findings from ``result`` and add KVA001/KVA002 findings for bad suppressions.

    ``texts`` maps a display path to its source; ``is_active(rule_id, path)`` says whether
    the rule ran on that file (selected, not ignored for the path); ``is_known(rule_id)``
    whether the rule exists; ``on_error(path, exception)``, if given, is told of a file
    whose comments could not be read, and the others are still applied.
    """
    by_path: dict[str, list[Suppression]] = {}
    for path, text in sorted(texts.items()):
        try:
            sups = parse_suppressions(text)
        except Exception as err:  # noqa: BLE001 - a bug reading one file's comments costs that file only
            if on_error is None:
                raise
            on_error(path, err)
            continue
        if sups:
            by_path[path] = sups
    if not by_path:
        return
    by_line = {path: _by_line(sups) for path, sups in by_path.items()}
    for press in result.presses:
        press.findings = [f for f in press.findings if not _suppressed(f, by_line.get(f.path, {}))]
    result.extra_findings = [f for f in result.extra_findings if not _suppressed(f, by_line.get(f.path, {}))]

    for path, sups in by_path.items():
        for sup in sups:
            if sup.ids is None or not sup.ids:
                if is_active(BareSuppression.id, path):
                    result.extra_findings.append(BareSuppression.at(path, sup))
                continue
            if not is_active(UnusedSuppression.id, path):
                continue
            for rule_id in sup.ids:
                if rule_id in sup.used:
                    continue
                if not _ID.match(rule_id) or not is_known(rule_id):
                    result.extra_findings.append(UnusedSuppression.at(path, sup, rule_id, known=False))
                elif is_active(rule_id, path):
                    result.extra_findings.append(UnusedSuppression.at(path, sup, rule_id, known=True))


def _by_line(sups: list[Suppression]) -> dict[int, list[Suppression]]:
    table: dict[int, list[Suppression]] = {}
    for sup in sups:
        if sup.ids:
            for line in sup.covers:
                table.setdefault(line, []).append(sup)
    return table


def _suppressed(finding: Finding, by_line: dict[int, list[Suppression]]) -> bool:
    hit = False
    for sup in by_line.get(finding.line, ()):
        if finding.rule.upper() in sup.ids:
            sup.used.add(finding.rule.upper())
            hit = True
    return hit

"""SARIF 2.1.0 output of ``kvaudit check``, for GitHub code scanning and other SARIF viewers.

One run, one tool (``kvaudit``) whose rules carry their documentation (``help``) and a link
to it (``helpUri``). Each finding is a result with a level mapped from its severity
(error -> error, warning -> warning, info -> note) and a ``partialFingerprints`` entry that
survives edits elsewhere in the file: a hash of the rule id, the path, the press and the
finding's source line with its whitespace collapsed (not its line number), plus an
occurrence count for identical lines. Files that could not be audited appear as
``toolExecutionNotifications`` of the invocation, which is then not successful.

The output is byte-stable: no timestamps, no absolute paths beyond those the run shows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..model import AuditResult, Finding, Severity
from ..rule import Rule, all_rules

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SARIF_VERSION = "2.1.0"
TOOL_NAME = "kvaudit"
FINGERPRINT_KEY = "kvauditFinding/v1"
SRCROOT = "%SRCROOT%"
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _uri(path: str) -> tuple[str, str | None]:
    """A URI for ``path`` and its base id: relative paths resolve against %SRCROOT%."""
    posix = Path(path).as_posix()
    if Path(path).is_absolute():
        return Path(path).as_uri(), None
    return quote(posix, safe="/"), SRCROOT


def _artifact_location(path: str) -> dict[str, Any]:
    uri, base = _uri(path)
    location: dict[str, Any] = {"uri": uri}
    if base:
        location["uriBaseId"] = base
    return location


def _first_paragraph(text: str) -> str:
    return " ".join(text.split("\n\n", 1)[0].split())


def rule_descriptor(rule: type[Rule]) -> dict[str, Any]:
    docs = rule.documentation()
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.message},
        "fullDescription": {"text": _first_paragraph(docs) or rule.message},
        "help": {"text": docs or rule.message, "markdown": f"**{rule.id} {rule.name}**\n\n{docs or rule.message}"},
        "helpUri": rule.help_uri(),
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": {"tags": ["kvaudit", rule.claim or "implementation"]},
    }


class _LineCache:
    def __init__(self) -> None:
        self._files: dict[str, list[str] | None] = {}

    def line(self, path: str, number: int) -> str | None:
        if path not in self._files:
            try:
                self._files[path] = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                self._files[path] = None
        lines = self._files[path]
        if lines is None or not 1 <= number <= len(lines):
            return None
        return lines[number - 1]


def fingerprint(finding: Finding, line_text: str | None, occurrence: int) -> str:
    """Stable across edits that move the finding: no line number, the line's text instead."""
    text = " ".join(line_text.split()) if line_text is not None else f"message:{finding.message}"
    key = "\x1f".join((finding.rule, Path(finding.path).as_posix(), finding.press or "", text, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def sarif_log(result: AuditResult) -> dict[str, Any]:
    """The SARIF log as a plain dict."""
    rules = list(all_rules())
    rule_index = {rule.id: number for number, rule in enumerate(rules)}
    lines = _LineCache()
    seen: dict[str, int] = {}
    results = []
    for finding in result.findings:
        text = lines.line(finding.path, finding.line)
        base = fingerprint(finding, text, 0)
        occurrence = seen.get(base, 0)
        seen[base] = occurrence + 1
        location: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": _artifact_location(finding.path),
                "region": {"startLine": max(1, finding.line), "startColumn": max(1, finding.column)},
            }
        }
        if finding.press:
            location["logicalLocations"] = [{"name": finding.press, "kind": "type"}]
        entry: dict[str, Any] = {
            "ruleId": finding.rule,
            "level": LEVELS[finding.severity],
            "message": {"text": finding.message},
            "locations": [location],
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint(finding, text, occurrence)},
        }
        if finding.rule in rule_index:
            entry["ruleIndex"] = rule_index[finding.rule]
        results.append(entry)

    notifications = []
    for status in result.files:
        if status.status != "error":
            continue
        notification: dict[str, Any] = {
            "level": "error",
            "message": {"text": status.message or f"{status.path}: could not be audited"},
            "descriptor": {"id": "bad-input"},
        }
        if status.path:
            notification["locations"] = [{"physicalLocation": {"artifactLocation": _artifact_location(status.path)}}]
        notifications.append(notification)
    invocation: dict[str, Any] = {"executionSuccessful": not result.has_errors}
    if notifications:
        invocation["toolExecutionNotifications"] = notifications

    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": TOOL_NAME,
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [rule_descriptor(rule) for rule in rules],
            }
        },
        "invocations": [invocation],
        "originalUriBaseIds": {SRCROOT: {"description": {"text": "The folder kvaudit ran in."}}},
        "columnKind": "unicodeCodePoints",
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render_sarif(result: AuditResult) -> str:
    """The SARIF document, with a trailing newline; the same input gives the same bytes."""
    return json.dumps(sarif_log(result), indent=2, ensure_ascii=False) + "\n"

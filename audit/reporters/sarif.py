"""SARIF 2.1.0 output of ``kvaudit check``, for GitHub code scanning and other SARIF viewers.

One run, one tool (``kvaudit``, with ``version`` and ``semanticVersion``) whose rules carry
their whole documentation as ``help.markdown`` (kvaudit has no hosted docs, so there is no
``helpUri``: a rule gets one only if it sets ``Rule.help_url``). Each finding is a result
with a level mapped from its severity (error -> error, warning -> warning, info -> note), a
region with the node's start and end (line and column) where the rule knows the node, and
a ``partialFingerprints`` entry that survives edits elsewhere in the file
(:mod:`kvaudit.fingerprint`). Files that could not be audited appear as error
``toolExecutionNotifications`` of the invocation, which is then not successful; warnings
about the run (kvpress's source unreadable) as warning notifications.

The output is byte-stable: no timestamps, no absolute paths beyond those the run shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .. import __version__
from ..fingerprint import FINGERPRINT_KEY, fingerprints
from ..model import AuditResult, Finding, Severity
from ..rule import Rule, all_rules

SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
SARIF_VERSION = "2.1.0"
TOOL_NAME = "kvaudit"
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
    descriptor = {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.message},
        "fullDescription": {"text": _first_paragraph(docs) or rule.message},
        "help": {"text": docs or rule.message, "markdown": rule.help_markdown()},
        "defaultConfiguration": {"level": LEVELS[rule.severity]},
        "properties": {"tags": ["kvaudit", rule.claim or "implementation"]},
    }
    if rule.help_url:
        descriptor["helpUri"] = rule.help_url
    return descriptor


def region(finding: Finding) -> dict[str, Any]:
    """The finding's region: start, and the node's end where the rule knew the node."""
    area: dict[str, Any] = {"startLine": max(1, finding.line), "startColumn": max(1, finding.column)}
    if finding.end_line is not None and finding.end_column is not None:
        area["endLine"] = max(area["startLine"], finding.end_line)
        area["endColumn"] = max(1, finding.end_column)
    return area


def sarif_log(result: AuditResult) -> dict[str, Any]:
    """The SARIF log as a plain dict."""
    rules = list(all_rules())
    rule_index = {rule.id: number for number, rule in enumerate(rules)}
    findings = result.findings
    results = []
    for finding, print_ in zip(findings, fingerprints(findings)):
        location: dict[str, Any] = {
            "physicalLocation": {"artifactLocation": _artifact_location(finding.path), "region": region(finding)}
        }
        if finding.press:
            location["logicalLocations"] = [{"name": finding.press, "kind": "type"}]
        entry: dict[str, Any] = {
            "ruleId": finding.rule,
            "level": LEVELS[finding.severity],
            "message": {"text": finding.message},
            "locations": [location],
            "partialFingerprints": {FINGERPRINT_KEY: print_},
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
    for warning in result.warnings:
        notifications.append({"level": "warning", "message": {"text": warning}, "descriptor": {"id": "incomplete-audit"}})
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

"""JSON output of ``kvaudit check``: the ``kvaudit.check/1`` contract, byte-stable."""

from __future__ import annotations

import json
from typing import Any

from ..model import AuditResult, Claim, Evidence, Finding, PaperMention, PressReport

SCHEMA = "kvaudit.check/1"


def evidence_dict(item: Evidence) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": item.kind, "line": item.line, "detail": item.detail}
    if item.path:
        data["path"] = item.path
    return data


def claim_dict(claim: Claim) -> dict[str, Any]:
    # `source` is the one-line form; `origin` gives its parts (kind: citation | config | option).
    origin = {"kind": claim.origin.kind, "place": claim.origin.place, "paper": claim.origin.paper or None}
    return {"id": claim.id, "source": claim.source, "line": claim.line, "origin": origin}


def finding_dict(finding: Finding) -> dict[str, Any]:
    data: dict[str, Any] = {"rule": finding.rule, "severity": finding.severity.value, "line": finding.line,
                            "column": finding.column}
    if finding.end_line is not None and finding.end_column is not None:  # where the rule knew the node
        data["end_line"], data["end_column"] = finding.end_line, finding.end_column
    data["message"] = finding.message
    return data


def mention_dict(mention: PaperMention) -> dict[str, Any]:
    # kind: relation (a passing mention) | unregistered-citation (cited, but not in the registry)
    return {"kind": mention.kind, "label": mention.label, "paper": mention.paper or None,
            "phrase": mention.phrase or None, "place": mention.place, "line": mention.line,
            "message": mention.text}


def press_dict(press: PressReport) -> dict[str, Any]:
    return {
        "name": press.name,
        "path": press.path,
        "line": press.line,
        "claims": [claim_dict(c) for c in press.claims],
        "verdicts": dict(sorted(press.verdicts.items())),
        "evidence": [evidence_dict(e) for e in press.evidence],
        "findings": [finding_dict(f) for f in press.findings],
        # Additive: only for a press whose documentation names a paper it is not held to.
        **({"mentions": [mention_dict(m) for m in press.mentions]} if press.mentions else {}),
        **({"trace": _trace_dict(press)} if press.trace is not None else {}),
    }


def _trace_dict(press: PressReport) -> dict[str, Any]:
    from ..codec import to_data  # the trace as the kvaudit.trace/2 document has it

    return to_data(press.trace)


def check_payload(result: AuditResult) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "files": [{"path": f.path, "status": f.status, "message": f.message} for f in result.files],
        "presses": [press_dict(p) for p in result.presses],
    }
    if result.extra_findings:
        payload["other_findings"] = [{**finding_dict(f), "path": f.path} for f in result.extra_findings]
    if result.warnings:  # e.g. kvpress's source could not be read, so inherited code went unaudited
        payload["warnings"] = list(result.warnings)
    return payload


def render_json(result: AuditResult) -> str:
    """The JSON document, with a trailing newline; the same input gives the same bytes."""
    return json.dumps(check_payload(result), indent=2, ensure_ascii=False) + "\n"

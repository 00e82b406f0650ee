"""``kvaudit trace --format json``: the ``kvaudit.trace/2`` document (docs/trace.md, "JSON").

Contract keys (stable): ``schema``, ``model.{arch,layers,source}``, ``plan``, ``grid``, and per press
``name``, ``path``, ``status``, ``message``,
``claims[].{id,paper,verdict,expected,measured,where,accepted}``,
``runs[].{tokens,batch,ratio,score_calls,kept,reused_from}``, ``defects[].{id,message}``; then
``errors`` and ``unused_acceptances``. Extra keys may be added; timings only ever appear under
``timings`` keys, so everything else is deterministic for a given model and options.

A plain function of the findings model: each press entry is its trace as :mod:`kvaudit.codec` writes it.
"""

from __future__ import annotations

import json
from typing import Any

from ..codec import to_data
from ..model import AuditResult, TraceSummary

SCHEMA = "kvaudit.trace/2"


def trace_document(result: AuditResult) -> dict[str, Any]:
    """The JSON document as a dict."""
    traced = result.traced or TraceSummary()
    model = traced.model
    return {
        "schema": SCHEMA,
        "model": {
            "arch": model.arch if model else None,
            "layers": model.layers if model else None,
            "source": model.source if model else None,
            "offline": True,  # HF_HUB_OFFLINE=1 in the worker, always
        },
        "plan": list(traced.plan),
        "grid": traced.grid,
        "presses": [to_data(press.trace) for press in result.presses if press.trace is not None],
        "errors": [status.message for status in result.files if status.status == "error"],
        "unused_acceptances": list(traced.unused_acceptances),
        # Worker start-up (imports of torch/transformers/kvpress, model build): timings, not contract.
        "timings": dict(traced.timings),
    }


def render_trace_json(result: AuditResult) -> str:
    """The document as text (sorted layout by construction, two-space indent, trailing newline)."""
    return json.dumps(trace_document(result), indent=2, ensure_ascii=False) + "\n"

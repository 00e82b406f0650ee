"""``kvaudit trace --format json``: the ``kvaudit.trace/2`` document (docs/trace.md, "JSON").

Contract keys (stable): ``schema``, ``model.{arch,layers,source}``, ``plan``, ``grid``, and per press
``name``, ``path``, ``status``, ``message``,
``claims[].{id,paper,verdict,expected,measured,where,accepted}``,
``runs[].{tokens,batch,ratio,score_calls,kept,reused_from}``, ``defects[].{id,message}``; then
``errors`` and ``unused_acceptances``. Extra keys may be added; timings only ever appear under
``timings`` keys, so everything else is deterministic for a given model and options.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..tracer.serialize import trace_to_dict

if TYPE_CHECKING:
    from ..tracer import TraceReport

SCHEMA = "kvaudit.trace/2"


def trace_document(report: TraceReport) -> dict[str, Any]:
    """The JSON document as a dict."""
    model = report.model or {}
    return {
        "schema": SCHEMA,
        "model": {
            "arch": model.get("arch"),
            "layers": model.get("layers"),
            "source": model.get("source"),
            "offline": True,  # HF_HUB_OFFLINE=1 in the worker, always
        },
        "plan": list(report.plan),
        "grid": report.plan_label,
        "presses": [trace_to_dict(trace) for trace in report.traces],
        "errors": list(report.error_lines),
        "unused_acceptances": list(report.unused_acceptances),
        # Worker start-up (imports of torch/transformers/kvpress, model build): timings, not contract.
        "timings": dict(report.worker_timings),
    }


def render_trace_json(report: TraceReport) -> str:
    """The document as text (sorted layout by construction, two-space indent, trailing newline)."""
    return json.dumps(trace_document(report), indent=2, ensure_ascii=False) + "\n"

"""PressTrace ⇄ JSON-safe dicts: the worker's wire format and the ``kvaudit.trace/2`` press entries.

Timings live under a separate ``timings`` key of each run, so everything else is deterministic.
"""

from __future__ import annotations

from typing import Any

from ..model import ClaimCheck, Defect, PressTrace, TraceRun


def _seconds(value: float) -> float:
    return round(value, 6)


def run_to_dict(run: TraceRun) -> dict[str, Any]:
    """One prefill: the contract keys first, then extras (compressed, Jaccard, timings)."""
    return {
        "tokens": run.tokens,
        "batch": run.batch,
        "score_calls": list(run.score_calls),
        "kept": list(run.kept),
        "reused_from": list(run.reused_from),
        "compressed": list(run.compressed),
        "jaccard": list(run.jaccard),
        "jaccard_matrix": [list(row) for row in run.jaccard_matrix],
        "ratio": run.ratio,
        "compress_calls": list(run.compress_calls),
        "decode_lengths": [list(step) for step in run.decode_lengths],
        "timings": {
            "prefill_s": _seconds(run.prefill_time_s),
            "score_s": _seconds(run.score_time_s),
            "compress_s": _seconds(run.compress_time_s),
            "layer_score_s": [_seconds(t) for t in run.layer_score_time_s],
            "layer_compress_s": [_seconds(t) for t in run.layer_compress_time_s],
            **({"repeat_prefill_s": [_seconds(t) for t in run.repeat_prefill_time_s],
                "repeat_score_s": [_seconds(t) for t in run.repeat_score_time_s]} if run.repeat_prefill_time_s else {}),
        },
    }


def run_from_dict(data: dict[str, Any]) -> TraceRun:
    timings = data.get("timings", {})
    return TraceRun(
        tokens=data["tokens"],
        batch=data["batch"],
        score_calls=list(data["score_calls"]),
        kept=list(data["kept"]),
        reused_from=list(data["reused_from"]),
        compressed=list(data.get("compressed", [])),
        jaccard=list(data.get("jaccard", [])),
        score_time_s=timings.get("score_s", 0.0),
        compress_time_s=timings.get("compress_s", 0.0),
        prefill_time_s=timings.get("prefill_s", 0.0),
        jaccard_matrix=[list(row) for row in data.get("jaccard_matrix", [])],
        layer_score_time_s=list(timings.get("layer_score_s", [])),
        layer_compress_time_s=list(timings.get("layer_compress_s", [])),
        repeat_prefill_time_s=list(timings.get("repeat_prefill_s", [])),
        repeat_score_time_s=list(timings.get("repeat_score_s", [])),
        ratio=data.get("ratio"),
        compress_calls=list(data.get("compress_calls", [])),
        decode_lengths=[list(step) for step in data.get("decode_lengths", [])],
    )


def claim_to_dict(check: ClaimCheck) -> dict[str, Any]:
    """One ``presses[].claims[]`` entry (``figures`` only when the check drew some)."""
    data: dict[str, Any] = {
        "id": check.id,
        "paper": check.paper,
        "verdict": check.verdict,
        "expected": check.expected,
        "measured": check.measured,
        "where": dict(check.where),
        "accepted": check.accepted,
        "message": check.message,
        "runs": dict(check.runs),
    }
    if check.figures:
        data["figures"] = list(check.figures)
    return data


def claim_from_dict(data: dict[str, Any]) -> ClaimCheck:
    return ClaimCheck(
        id=data["id"], paper=data["paper"], verdict=data["verdict"], message=data.get("message", ""),
        expected=data.get("expected"), measured=data.get("measured"), where=dict(data.get("where", {})),
        accepted=data.get("accepted"), runs=dict(data.get("runs", {})), figures=list(data.get("figures", [])),
    )


def trace_to_dict(trace: PressTrace) -> dict[str, Any]:
    """One press entry of ``kvaudit.trace/2`` (``reference`` only when the reference was traced)."""
    data: dict[str, Any] = {
        "name": trace.name,
        "path": trace.path,
        "status": trace.status,
        "message": trace.message,
        "config": trace.config,
        "settings": trace.settings,
        "claims": [claim_to_dict(check) for check in trace.claims],
        "runs": [run_to_dict(run) for run in trace.runs],
        "defects": [{"id": d.id, "message": d.message} for d in trace.defects],
    }
    if trace.reference is not None:
        data["reference"] = trace_to_dict(trace.reference)
    return data


def trace_from_dict(data: dict[str, Any]) -> PressTrace:
    reference = data.get("reference")
    return PressTrace(
        name=data["name"],
        path=data["path"],
        status=data["status"],
        message=data.get("message"),
        runs=[run_from_dict(run) for run in data.get("runs", [])],
        claims=[claim_from_dict(claim) for claim in data.get("claims", [])],
        defects=[Defect(d["id"], d["message"]) for d in data.get("defects", [])],
        reference=trace_from_dict(reference) if reference else None,
        config=data.get("config"),
        settings=data.get("settings"),
    )

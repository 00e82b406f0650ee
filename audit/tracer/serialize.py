"""PressTrace ⇄ JSON-safe dicts: the worker's wire format and the ``kvaudit.trace/2`` press entries.

Timings live under a separate ``timings`` key of each run, so everything else is deterministic.
"""

from __future__ import annotations

from typing import Any

from ..model import CLAIM_VERDICTS, ClaimCheck, Defect, PressTrace, TraceRun


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


class MalformedTrace(ValueError):
    """A trace whose shape is wrong (what a press wrote on the result pipe, say); ``str()`` says what."""


def _kind(value: object, kinds: tuple[type, ...], what: str) -> None:
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise MalformedTrace(f"{what} is {type(value).__name__}")


def _numbers(values: object, what: str, optional: bool = False) -> None:
    _kind(values, (list,), what)
    for value in values:  # type: ignore[union-attr]
        if not (optional and value is None):
            _kind(value, (int, float), f"an item of {what}")


def validate_trace(trace: PressTrace) -> None:
    """Raise :class:`MalformedTrace` unless every field the reporters read has the type they expect."""
    _kind(trace.name, (str,), "name")
    _kind(trace.path, (str,), "path")
    if trace.status not in ("ok", "error"):
        raise MalformedTrace(f"status is {str(trace.status)[:40]!r}")
    for value, what in ((trace.message, "message"), (trace.config, "config"), (trace.settings, "settings")):
        _kind(value, (str, type(None)), what)
    for run in trace.runs:
        _kind(run.tokens, (int,), "runs[].tokens")
        _kind(run.batch, (int,), "runs[].batch")
        _kind(run.ratio, (int, float, type(None)), "runs[].ratio")
        for values, what in ((run.score_calls, "score_calls"), (run.kept, "kept"), (run.compress_calls, "compress_calls"),
                             (run.layer_score_time_s, "layer_score_s"), (run.layer_compress_time_s, "layer_compress_s"),
                             (run.repeat_prefill_time_s, "repeat_prefill_s"), (run.repeat_score_time_s, "repeat_score_s")):
            _numbers(values, f"runs[].{what}")
        for values, what in ((run.reused_from, "reused_from"), (run.jaccard, "jaccard")):
            _numbers(values, f"runs[].{what}", optional=True)
        for row in [*run.jaccard_matrix, *run.decode_lengths]:
            _numbers(row, "runs[] matrix row")
        for value in (run.score_time_s, run.compress_time_s, run.prefill_time_s):
            _kind(value, (int, float), "runs[].timings")
    for check in trace.claims:
        for value, what in ((check.id, "claims[].id"), (check.paper, "claims[].paper"), (check.message, "claims[].message")):
            _kind(value, (str,), what)
        if check.verdict not in CLAIM_VERDICTS:
            raise MalformedTrace(f"claims[].verdict is {str(check.verdict)[:40]!r}")
        _kind(check.accepted, (str, type(None)), "claims[].accepted")
        _kind(check.where, (dict,), "claims[].where")
        _kind(check.runs, (dict,), "claims[].runs")
        for figure in check.figures:
            _kind(figure, (dict,), "claims[].figures[]")
    for defect in trace.defects:
        _kind(defect.id, (str,), "defects[].id")
        _kind(defect.message, (str,), "defects[].message")
    if trace.reference is not None:
        validate_trace(trace.reference)

"""Why a press could not be traced, in one place (pure Python, no torch).

Every failure of a press's build or run is sorted into one kind, which decides how it is reported:

* ``pretrained``: the press needs files or data made for a named pretrained model (a download from
  the Hugging Face Hub, a checkpoint list, a budget curve). kvaudit runs offline on a tiny model,
  so the press is ``not-run``: no defect, its claims are ``not-run`` with the reason.
* ``abstract``: an abstract press (``NotImplementedError`` in its first prefill). Not a defect.
* ``build``: the press cannot be built with defaults (a required argument, a failing assertion
  in its constructor). Not a defect; ``--press`` builds it.
* ``crash``: anything else the press raised: a ``crash`` defect.
"""

from __future__ import annotations

import re

PRETRAINED, ABSTRACT, BUILD, CRASH = "pretrained", "abstract", "build", "crash"

# What presses say when they reach for files of a named model (HF_HUB_OFFLINE=1 stops downloads).
_PRETRAINED_SIGNS = re.compile(
    r"Hub|huggingface|Repo id|Checkpoint not in|not released|local cache|budget curve", re.I)

REASONS = {
    PRETRAINED: "needs files made for a named pretrained model (a download from the Hugging Face Hub; "
                "kvaudit runs offline, HF_HUB_OFFLINE=1)",
    ABSTRACT: "abstract press, not traced",
    BUILD: "cannot be built with defaults (a wrapper or an abstract base; pass --press)",
    CRASH: "raised on the tiny model",
}


def classify(message: str, exception_type: str | None = None, first_run: bool = True) -> str:
    """The kind of a failure, from its one-line message and exception class name."""
    if first_run and exception_type == "NotImplementedError":
        return ABSTRACT
    if _PRETRAINED_SIGNS.search(message):
        return PRETRAINED
    if "needs a value for" in message or "cannot build" in message or message.startswith("abstract press"):
        return BUILD
    return CRASH


def is_defect(kind: str) -> bool:
    """Only a crash is the press's fault on the tiny model; the other kinds are limits of the setting."""
    return kind == CRASH

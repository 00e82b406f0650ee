"""Why something could not be traced, in one place (pure Python, no torch).

Two sorts of failure are told apart here. A **worker child** that did not return a trace failed
in one of four ways (:func:`child_failure`): it hung or died (the press's doing: a ``crash``), its
target did not import (:class:`ImportFailure`: bad input), the model could not be built there
(:class:`ModelFailure`: the options or the machine), or the tracer's own code raised (a bug:
internal error). Within a trace, every failure of a **press's** build or run is sorted into one
kind (:func:`classify`), which decides how it is reported:

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

# What a one-line failure may echo of the user's text (an exception's message, a line it printed).
MESSAGE_WIDTH = 300

PRETRAINED, ABSTRACT, BUILD, CRASH = "pretrained", "abstract", "build", "crash"
# How a worker child that returned no trace failed (see child_failure).
INPUT, SETUP, INTERNAL = "input", "setup", "internal"


class ReportedError(Exception):
    """An error whose message is reported as is (no exception type in front)."""


class ImportFailure(ReportedError):
    """The target module could not be imported (a bad target: exit code 2)."""


class ModelFailure(ReportedError):
    """The model could not be built in the child (``--device``, ``--dtype``, ``--model``): no press can run."""


def child_failure(finished: bool, error_type: str | None) -> str:
    """The kind of a child that returned no trace: ``crash`` (it hung or died), ``input``, ``setup`` or ``internal``.

    ``finished`` is False when the child hung or died before reporting; else it raised ``error_type``.
    Every exception of the press's own code (its build, its prefills) is caught into the trace, so an
    exception that reaches the child's top is the import's, the model's, or the tracer's own.
    """
    if not finished:
        return CRASH
    if error_type == ImportFailure.__name__:
        return INPUT
    if error_type == ModelFailure.__name__:
        return SETUP
    return INTERNAL

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


# How much of the original error a Hub explanation keeps after its plain words.
HUB_ERROR_WIDTH = 100
# huggingface_hub's check of a repo id, which ends with the id it refused.
_INVALID_REPO = re.compile(r"Repo id must use alphanumeric chars.*: '([^']*)'\.?$")


def hub_request(error: BaseException) -> tuple[str, object] | None:
    """The Hub download a press's exception came from: (loader class, repo id), else None.

    The outermost ``from_pretrained`` frame of the traceback is the call the press made
    (``AutoTokenizer.from_pretrained(model.config.name_or_path)``); its class and first argument
    say what it wanted. Read from the frames only: nothing is imported or called.
    """
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        code = frame.f_code
        if code.co_name == "from_pretrained":
            owner = frame.f_locals.get("cls")
            loader = owner.__name__ if isinstance(owner, type) else code.co_qualname.rpartition(".")[0] or "a loader"
            names = code.co_varnames[:code.co_argcount]
            repo = frame.f_locals.get(names[1]) if len(names) > 1 else None
            return loader, repo
        traceback = traceback.tb_next
    return None


def hub_failure(error: BaseException, line: str, model_name: str) -> str | None:
    """Plain words for a press that failed fetching files of a named model from the Hub, else None.

    kvaudit's tiny model is built locally: its ``name_or_path`` is empty, so a press that names its
    download after the model (KVzip's tokenizer, KVzap's and RestoreKV's weights) asks the Hub for
    an invalid repo id, and the error it gets ("Repo id must use alphanumeric chars ... ''") does
    not say so. ``line`` is the exception's one line, kept (shortened) after the explanation.
    """
    request = hub_request(error)
    if request is not None:
        loader, repo = request
        named_after_model = isinstance(repo, str) and (not repo or repo.endswith(("-", "/", "_")))
        if not (_PRETRAINED_SIGNS.search(line) or named_after_model):
            return None  # a load that failed for another reason (a shape mismatch, say) is a crash
        what = ("the model's tokenizer" if "Tokenizer" in loader else "the model's configuration" if "Config" in loader
                else f"{loader} files")
        said, details = f"needs {what} from the Hugging Face Hub", [f"{loader}.from_pretrained({_shown(repo)})"]
    else:  # a bare download (hf_hub_download): huggingface_hub's own check names the repo id it refused
        invalid = _INVALID_REPO.search(line)
        if invalid is None:
            return None
        repo = invalid.group(1)
        said, details = "needs files from the Hugging Face Hub", [f"repo {_shown(repo)}"]
    if not model_name and isinstance(repo, str) and (not repo or repo.endswith(("-", "/", "_"))):
        details.append("named after the model; the tiny model is built locally and has no name")
    from ..source import one_line as shorten

    return f"{said} ({', '.join(details)}): {shorten(line, HUB_ERROR_WIDTH)}"


def _shown(value: object) -> str:
    """``repr`` of a value the press passed, cut for a one-line message; never raises."""
    from ..source import one_line as shorten

    try:
        return shorten(repr(value), HUB_ERROR_WIDTH)
    except Exception:  # noqa: BLE001 - a user object whose __repr__ raises
        return f"<{type(value).__name__}>"


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

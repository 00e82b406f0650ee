"""Why something could not be traced, decided once, where it happened (pure Python, no torch).

Every failure gets a :class:`kvaudit.model.Failure`, read from the failure itself, never from the
text of its message:

* a **worker child** that did not answer ran into :class:`ImportFailure` (its target does not import,
  or the ``--press`` expression is bad: ``input``), :class:`ModelFailure` (the model cannot be built
  there: ``setup``), something else of the tracer's own (``internal``), or it hung or died (``crash``);
  the job functions and the worker set the kind on the reply (:mod:`kvaudit.tracer.wire`);
* a **press's** build or run failed (:func:`press_failure`): an abstract press (``NotImplementedError``
  in its first prefill), one that cannot be built with defaults (:class:`BuildError`), one that needs
  files made for a named pretrained model (:func:`needs_pretrained`: it reached for the Hugging Face
  Hub, or looked the model up by its name), or anything else it raised (``crash``, the one defect).
"""

from __future__ import annotations

from types import TracebackType

from ..model import Failure

# What a one-line failure may echo of the user's text (an exception's message, a line it printed).
MESSAGE_WIDTH = 300
# How much of the original error a Hub explanation keeps after its plain words.
HUB_ERROR_WIDTH = 100
# Modules whose frames or exceptions mean "a download was attempted" (HF_HUB_OFFLINE=1 stops it).
_HUB_MODULES = ("huggingface_hub", "datasets")
# The Hub client's entry points, whose `repo_id` argument names what was asked for.
_HUB_CALLS = ("hf_hub_download", "snapshot_download", "load_dataset")


class ReportedError(Exception):
    """An error whose message is reported as is (no exception type in front)."""


class ImportFailure(ReportedError):
    """The target module could not be imported, or the ``--press`` expression is bad (bad input: exit code 2)."""


class ModelFailure(ReportedError):
    """The model could not be built in the child (``--device``, ``--dtype``, ``--model``): no press can run."""


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during, each once."""
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        pending.extend((current.__cause__, current.__context__))
    return seen


def _frames(error: BaseException) -> list:
    """The frames of ``error``'s traceback, outermost first."""
    frames = []
    traceback: TracebackType | None = error.__traceback__
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    return frames


def _from_hub(frame) -> bool:
    module = frame.f_globals.get("__name__") or ""
    return module.split(".", 1)[0] in _HUB_MODULES


def named_after_model(repo: object) -> bool:
    """A repo id built from the model's name, which the locally built tiny model does not have (``'nvidia/KVzap-mlp-'``)."""
    return isinstance(repo, str) and (not repo or repo.endswith(("-", "/", "_")))


def hub_request(error: BaseException) -> tuple[str, object] | None:
    """The Hub download a press's exception came from: (loader, repo id), else None.

    The outermost ``from_pretrained`` frame of the traceback is the call the press made
    (``AutoTokenizer.from_pretrained(model.config.name_or_path)``), its class and first argument say
    what it wanted; else the Hub client's first frame that holds a ``repo_id`` (``hf_hub_download``, or
    the check that refused the id). Read from the frames only: nothing is imported or called.
    """
    for exception in _chain(error):
        for frame in _frames(exception):
            code = frame.f_code
            if code.co_name == "from_pretrained":
                owner = frame.f_locals.get("cls")
                loader = owner.__name__ if isinstance(owner, type) else code.co_qualname.rpartition(".")[0] or "a loader"
                names = code.co_varnames[:code.co_argcount]
                return loader, frame.f_locals.get(names[1]) if len(names) > 1 else None
            if _from_hub(frame) and ("repo_id" in frame.f_locals or code.co_name in _HUB_CALLS):
                return "", frame.f_locals.get("repo_id", frame.f_locals.get("path"))
    return None


def needs_pretrained(error: BaseException) -> bool:
    """Whether a press failed for want of files made for a named pretrained model.

    Any of: an exception of the Hub client (``huggingface_hub``, ``datasets``) in the chain, or a frame
    of it in a traceback (a download HF_HUB_OFFLINE=1 refused); a ``from_pretrained`` asked for a repo
    named after the model; or the failure was raised in code that looked the model up by its name
    (``model.config.name_or_path``: a checkpoint list, a table of budget curves).
    """
    for exception in _chain(error):
        if type(exception).__module__.split(".", 1)[0] in _HUB_MODULES:
            return True
        frames = _frames(exception)
        if any(_from_hub(frame) for frame in frames):
            return True
        if frames and "name_or_path" in frames[-1].f_code.co_names:
            return True
    request = hub_request(error)
    return request is not None and named_after_model(request[1])


def press_failure(error: BaseException, first_run: bool) -> Failure:
    """The kind of a press's failure in a prefill (its first one: ``first_run``)."""
    if first_run and isinstance(error, NotImplementedError):
        return Failure.ABSTRACT
    if needs_pretrained(error):
        return Failure.PRETRAINED
    return Failure.CRASH


def hub_failure(error: BaseException, line: str, model_name: str) -> str | None:
    """Plain words for a press that failed fetching files of a named model from the Hub, else None.

    kvaudit's tiny model is built locally: its ``name_or_path`` is empty, so a press that names its
    download after the model (KVzip's tokenizer, KVzap's and RestoreKV's weights) asks the Hub for an
    invalid repo id, and the error it gets does not say so. ``line`` is the exception's one line, kept
    (shortened) after the explanation.
    """
    if not needs_pretrained(error):
        return None
    request = hub_request(error)
    if request is None:
        return None
    loader, repo = request
    if loader:
        what = ("the model's tokenizer" if "Tokenizer" in loader else "the model's configuration" if "Config" in loader
                else f"{loader} files")
        said, details = f"needs {what} from the Hugging Face Hub", [f"{loader}.from_pretrained({_shown(repo)})"]
    else:
        said, details = "needs files from the Hugging Face Hub", [f"repo {_shown(repo)}"]
    if not model_name and named_after_model(repo):
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

"""The typed wire between kvaudit, its trace worker and the worker's forked children (stdlib and msgspec).

kvaudit sends one request per line (:data:`Request`: :class:`InitRequest`, :class:`ListRequest` or
:class:`TraceRequest`); the worker answers with the reply type of that request. A forked child
hands the worker the same reply types through its result pipe. Everything is encoded and checked by
:mod:`kvaudit.codec`: a field of the wrong type, or one a reply does not have, is a malformed message
(what a press forged on the result pipe), never a ``KeyError`` later.

Why a request failed is a :class:`kvaudit.model.Failure`, decided where it happened (the child that
imported the module, the worker that saw a child die) and carried as that value: nothing downstream
reads it back from the text of a message.
"""

from __future__ import annotations

import msgspec

from ..model import Claim, Failure, ModelInfo, PressTrace
from .options import TraceOptions


class ClaimRequest(msgspec.Struct, frozen=True):
    """One claim the parent decided a press is held to (:mod:`kvaudit.claims`), as the child checks it.

    ``label`` names who claims it, as the check's result says (``ClaimCheck.paper``); ``paper`` is the
    registry key whose published parameters apply, ``contract`` the kvpress base whose contract it is.
    The child only looks these up in the mechanism (:class:`kvaudit.mechanism.Mechanism`); it never
    decides which claims a press has.
    """

    id: str
    label: str
    paper: str = ""
    contract: str = ""

    @classmethod
    def of(cls, claim: Claim) -> ClaimRequest:
        origin = claim.origin
        return cls(claim.id, origin.paper_label or origin.summary, origin.paper, origin.contract)


class Plan(msgspec.Struct, frozen=True):
    """The prefills of one trace request (a shared worker may serve several plans)."""

    tokens: int
    long_tokens: int | None
    ratios: tuple[float, ...]
    decode_steps: int
    seed: int

    @classmethod
    def of(cls, options: TraceOptions) -> Plan:
        return cls(options.tokens, options.long_tokens, tuple(options.ratios), options.decode_steps, options.seed)


class InitRequest(msgspec.Struct, tag="init"):
    """Import torch, transformers and kvpress, and build the model (again only when the model options change)."""

    options: TraceOptions


class ListRequest(msgspec.Struct, tag="list"):
    """Import a target module in a child: its classes, and the class ``press_expr`` builds there."""

    path: str  # where the worker imports from
    display: str  # how the user sees it (as `kvaudit check` shows it)
    module: str | None  # the dotted name, when the target was given as one
    timeout: float
    memory_limit: int
    press_expr: str | None = None


class TraceRequest(msgspec.Struct, tag="trace"):
    """Trace one press of a module (and the reference press built around it, when asked).

    ``class_name`` is the class to build with defaults (or as ``rules/presses.toml`` says), unless
    ``press_expr`` is given: then the expression builds it, evaluated with kvpress's names overridden
    by the module's.
    """

    path: str
    display: str
    module: str | None
    class_name: str | None
    press_expr: str | None
    reference: bool
    timeout: float
    memory_limit: int
    plan: Plan
    claims: list[ClaimRequest] = []
    reference_claims: list[ClaimRequest] = []


Request = InitRequest | ListRequest | TraceRequest


class InitReply(msgspec.Struct, forbid_unknown_fields=True):
    """The model, or why the worker cannot trace at all (the trace extra, ``--device``, ``--model``)."""

    model: ModelInfo | None = None
    error: str | None = None
    import_s: float = 0.0
    build_s: float = 0.0
    failure: Failure | None = None  # internal, when the worker itself failed on the request
    traceback: str | None = None


class ClassEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A class as the imported module has it: where it is defined, and its MRO's class names."""

    name: str
    line: int
    is_press: bool
    mro: tuple[str, ...] = ()
    path: str = ""  # the file that defines it (for the class a --press expression builds)


class ListReply(msgspec.Struct, forbid_unknown_fields=True):
    """The classes a module defines (and the one ``press_expr`` builds), or why it could not be imported."""

    classes: list[ClassEntry] = []
    expression: ClassEntry | None = None
    failure: Failure | None = None
    error: str | None = None
    traceback: str | None = None


class TraceReply(msgspec.Struct, forbid_unknown_fields=True):
    """One press's trace; ``failure`` when the request itself failed (the press's own failures are in the trace).

    ``crash``: the child hung or died (the trace carries the defect); ``input``: the module does not
    import or the ``--press`` expression is bad; ``setup``: the model cannot be built here; ``internal``:
    the tracer failed (``traceback`` for ``--debug``).
    """

    trace: PressTrace | None = None  # None only when the worker itself failed on the request
    failure: Failure | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

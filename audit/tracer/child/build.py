"""Build the press to trace, find the scorers inside it, and build the reference press.

Runs inside a forked worker child (it imports kvpress and the user's module).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

DEFAULT_COMPRESSION_RATIO = 0.5
REFERENCE_N_REUSE = 2
REFERENCE_DEFAULT_CHUNK = 10  # the paper's chunk length, for presses that have none


class BuildError(Exception):
    """The press cannot be built; ``str()`` is a one-line reason."""


class ExpressionError(BuildError):
    """The ``--press`` expression is bad input (syntax, unknown name, not a press)."""


def one_line(error: BaseException) -> str:
    """The exception as ``Type: message`` on one line, cut to :data:`MESSAGE_WIDTH` characters."""
    from ...source import error_line
    from ..errors import MESSAGE_WIDTH

    return error_line(error, MESSAGE_WIDTH)


def default_press(cls: type) -> Any:
    """Build ``cls`` with defaults.

    A ``press`` parameter that is required (or defaults to None) gets
    ``SnapKVPress(compression_ratio=0.5)``; a ScorerPress gets ``compression_ratio=0.5``; every
    other parameter keeps its default. Parameters are read from the constructor's signature, so
    dataclasses and hand-written ``__init__`` methods (CriticalKVPress) both work.
    """
    from kvpress import ScorerPress, SnapKVPress

    if getattr(cls, "__abstractmethods__", None):
        raise BuildError(f"{cls.__name__} is abstract ({', '.join(sorted(cls.__abstractmethods__))})")
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    kwargs: dict[str, Any] = {}
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        required = parameter.default is parameter.empty
        if parameter.name == "press" and (required or parameter.default is None):
            kwargs["press"] = SnapKVPress(compression_ratio=DEFAULT_COMPRESSION_RATIO)
        elif parameter.name == "compression_ratio" and issubclass(cls, ScorerPress):
            kwargs["compression_ratio"] = DEFAULT_COMPRESSION_RATIO
        elif required:
            raise BuildError(f"{cls.__name__} needs a value for {parameter.name!r}; pass --press")
    try:
        press = cls(**kwargs)
    except BaseException as error:  # noqa: BLE001 - __post_init__ assertions, sys.exit(): whatever the type
        raise BuildError(f"cannot build {cls.__name__} with defaults: {one_line(error)}; pass --press") from None
    if isinstance(press, ScorerPress) and "compression_ratio" not in kwargs:
        try:
            press.compression_ratio = DEFAULT_COMPRESSION_RATIO  # e.g. a property forwarding to a nested press
        except AttributeError:
            pass
    return press


def press_from_expression(expression: str, module: ModuleType | None) -> Any:
    """Evaluate ``--press`` with kvpress's names, overridden by the target module's names."""
    import kvpress

    namespace: dict[str, Any] = {name: getattr(kvpress, name) for name in dir(kvpress) if not name.startswith("_")}
    if module is not None:
        namespace.update(vars(module))
    try:
        press = eval(compile(expression, "<--press>", "eval"), namespace)  # noqa: S307 - the user's own expression
    except BaseException as error:  # noqa: BLE001 - sys.exit() in a constructor is bad input like a ValueError
        raise ExpressionError(f"bad --press expression {expression!r}: {one_line(error)}") from None
    if not isinstance(press, kvpress.BasePress):
        raise ExpressionError(f"bad --press expression {expression!r}: it builds {type(press).__name__!r}, not a kvpress press")
    return press


def _children(obj: Any) -> Iterator[Any]:
    """Values held by a press: dataclass fields and plain attributes, looking inside containers."""
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for value in values:
        if isinstance(value, (list, tuple, set)):
            yield from value
        elif isinstance(value, dict):
            yield from value.values()
        else:
            yield value


def reachable_presses(press: Any) -> list[Any]:
    """The press and every press nested in its fields, recursively, each once, outermost first."""
    from kvpress import BasePress

    seen: set[int] = set()
    order: list[Any] = []
    pending = [press]
    while pending:
        current = pending.pop(0)
        if id(current) in seen or not isinstance(current, BasePress):
            continue
        seen.add(id(current))
        order.append(current)
        pending.extend(child for child in _children(current) if isinstance(child, BasePress))
    return order


def scoring_presses(press: Any) -> list[Any]:
    """Reachable presses with a ``score`` method: every ScorerPress, and any press that defines one."""
    return [p for p in reachable_presses(press) if callable(getattr(type(p), "score", None))]


def reference_press(press: Any) -> Any:
    """``ChunkKVReusePress`` with the same scorer, compression ratio and chunk length as ``press``."""
    from kvpress import ScorerPress

    try:
        from ...reference import ChunkKVReusePress
    except Exception as error:  # noqa: BLE001
        raise BuildError(f"reference press unavailable: {one_line(error)}") from None

    nested = [p for p in reachable_presses(press)[1:] if isinstance(p, ScorerPress)]
    scorer = nested[0] if nested else press if isinstance(press, ScorerPress) else None
    if scorer is None:
        raise BuildError(f"{type(press).__name__} holds no ScorerPress to give the reference press")
    try:
        scorer = copy.deepcopy(scorer)  # the user's scorer: its __deepcopy__ may raise anything
    except BaseException as error:  # noqa: BLE001
        raise BuildError(f"cannot copy {type(scorer).__name__} for the reference press: {one_line(error)}") from None
    ratio = getattr(press, "compression_ratio", None)
    if isinstance(ratio, float):
        scorer.compression_ratio = ratio
    chunk_length = getattr(press, "chunk_length", None)
    if not isinstance(chunk_length, int) or isinstance(chunk_length, bool):
        chunk_length = REFERENCE_DEFAULT_CHUNK
    try:
        return ChunkKVReusePress(press=scorer, chunk_length=chunk_length, n_reuse=REFERENCE_N_REUSE)
    except BaseException as error:  # noqa: BLE001
        raise BuildError(f"cannot build the reference press: {one_line(error)}") from None

"""``kvaudit trace TARGET``: a path or a dotted module name, with an optional ``::ClassName``.

Resolved in the parent without importing anything (``kvaudit.targets.resolve_module`` walks the
file system), and pre-checked with :func:`kvaudit.source.load_source` (the reader and parser of
``kvaudit check``) so that a missing, unreadable or unparsable file or an unknown class is reported
at once, in the words ``check`` uses, before the worker pays for torch.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from ...source import SourceError, display_path, load_source
from ...targets import looks_like_module, resolve_module, split_class_selector


class TraceInputError(Exception):
    """Bad input (exit code 2); ``str()`` is the one-line message."""


@dataclass(frozen=True)
class TraceTarget:
    """A resolved target.

    Parameters
    ----------
    text : str
        The target as the user wrote it.
    path : Path
        Its source file.
    module : str | None
        The dotted module name when the target was given as one (imported by name in the worker).
    class_name : str | None
        The ``::ClassName`` selector, if any.
    classes : tuple[str, ...]
        Names of the classes the file defines (from the syntax tree).
    """

    text: str
    path: Path
    module: str | None
    class_name: str | None
    classes: tuple[str, ...] = ()


def defined_classes(path: Path) -> tuple[str, ...]:
    """Names of the classes defined at module level (including under ``if``/``try``/``with``).

    Reading and parsing go through :func:`kvaudit.source.load_source`, as ``kvaudit check`` does,
    so a bad file gets the same one-line reason in both commands.

    Raises
    ------
    TraceInputError
        ``PATH: reason`` when the file is unreadable, binary, not UTF-8, empty or not valid Python.
    """
    shown = display_path(path)
    try:
        tree = load_source(path, shown).tree
    except SourceError as error:
        raise TraceInputError(f"{shown}: {error}") from None
    names: list[str] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            for block in ("body", "orelse", "finalbody", "handlers"):
                for child in getattr(node, block, []):
                    pending.extend(child.body if isinstance(child, ast.ExceptHandler) else [child])
    return tuple(names)


def resolve_target(text: str, press_expr: str | None = None) -> TraceTarget:
    """Resolve ``text`` or raise :class:`TraceInputError` with a one-line reason (worded as ``check`` words it)."""
    base, class_name = split_class_selector(text)
    if not base.strip():
        raise TraceInputError("empty target name")
    path = Path(base)
    module: str | None = None
    if path.is_dir():
        raise TraceInputError(f"{base}: is a directory; give a Python file or a module name")
    if not path.exists():
        if not looks_like_module(base):
            raise TraceInputError(f"{base}: no such file or directory")
        found = resolve_module(base)
        if found is None:
            raise TraceInputError(f"{base}: no such file, directory or importable module")
        path, module = found, base
    elif not path.is_file():  # a FIFO or a device would block or mislead the reader
        raise TraceInputError(f"{base}: not a regular file")
    path = path.resolve()
    classes = defined_classes(path)
    if class_name is not None and class_name not in classes:
        known = ", ".join(classes) if classes else "none"
        raise TraceInputError(f"{base}: no class {class_name!r} (classes defined there: {known})")
    if not classes and press_expr is None:
        raise TraceInputError(f"{display_path(path)}: defines no classes, so no presses to trace")
    return TraceTarget(text=text, path=path, module=module, class_name=class_name, classes=classes)


def check_expression(press_expr: str) -> None:
    """Reject a ``--press`` expression that is not even valid Python, before starting the worker."""
    try:
        compile(press_expr, "<--press>", "eval")
    except SyntaxError as error:
        raise TraceInputError(f"bad --press expression {press_expr!r}: syntax error: {error.msg}") from None

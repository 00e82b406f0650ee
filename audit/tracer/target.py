"""``kvaudit trace TARGET``: a path or a dotted module name, with an optional ``::ClassName``.

Resolved in the parent without importing anything (``audit.targets.resolve_module`` walks the
file system), and pre-checked with :mod:`ast` so that a missing file, a syntax error or an unknown
class is reported at once, before the worker pays for torch.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from audit.targets import resolve_module, split_class_selector


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

    @property
    def display_path(self) -> str:
        return str(self.path)


def _looks_like_module(text: str) -> bool:
    return not text.endswith(".py") and all(part.isidentifier() for part in text.split("."))


def defined_classes(path: Path) -> tuple[str, ...]:
    """Names of the classes defined at module level (including under ``if``/``try``), or raise on bad syntax."""
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TraceInputError(f"{path}: cannot read: {error.__class__.__name__}") from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise TraceInputError(f"{path}:{error.lineno or 0}: syntax error: {error.msg}") from None
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
    """Resolve ``text`` or raise :class:`TraceInputError` with a one-line reason."""
    base, class_name = split_class_selector(text)
    path = Path(base)
    module: str | None = None
    if path.is_dir():
        raise TraceInputError(f"{base}: is a directory; give a Python file or a module name")
    if not path.is_file():
        if not _looks_like_module(base):
            raise TraceInputError(f"{base}: no such file")
        found = resolve_module(base)
        if found is None:
            raise TraceInputError(f"{base}: no such file or importable module")
        path, module = found, base
    path = path.resolve()
    classes = defined_classes(path)
    if class_name is not None and class_name not in classes:
        known = ", ".join(classes) if classes else "none"
        raise TraceInputError(f"{base}: no class {class_name!r} (classes defined there: {known})")
    if not classes and press_expr is None:
        raise TraceInputError(f"{base}: defines no classes, so no presses to trace")
    return TraceTarget(text=text, path=path, module=module, class_name=class_name, classes=classes)


def check_expression(press_expr: str) -> None:
    """Reject a ``--press`` expression that is not even valid Python, before starting the worker."""
    try:
        compile(press_expr, "<--press>", "eval")
    except SyntaxError as error:
        raise TraceInputError(f"bad --press expression {press_expr!r}: syntax error: {error.msg}") from None

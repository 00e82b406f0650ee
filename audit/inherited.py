"""Say when classes derive from kvpress classes whose source kvaudit could not read.

Bases are followed into kvpress's installed source (found on disk, never imported).

- kvpress is not installed for this Python: a subclass of ``kvpress.ChunkKVPress`` is
  still recognised as a press, by the name it imports, but the methods it inherits are
  not audited, so their findings are missing.
- kvpress is installed but a module of it cannot be read (not UTF-8, binary, over the size
  cap, ...): a class deriving from a press defined there cannot be audited at all.

Either way the run is incomplete, and :func:`unread_base_warning` says so in one line
(the CLI prints it once on stderr; the JSON holds it under ``warnings``). A class deriving
from a name that an installed, readable kvpress simply does not have (a fork's own press)
is another matter: the engine notes it in that file's status.
"""

from __future__ import annotations

from .analysis.index import KVPRESS, ClassInfo, ProjectIndex
from .source import SourceError, load_source
from .targets import resolve_module

MAX_NAMED = 3  # classes and bases named in the warning; the rest are counted


def _unread_bases(cls: ClassInfo) -> set[str]:
    """kvpress classes in ``cls``'s ancestry that were not read (iterative: chains can be long)."""
    unread: set[str] = set()
    stack, seen = [cls], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        for base in current.resolved_bases:
            if isinstance(base, str):
                if base.split(".")[0] == KVPRESS:
                    unread.add(base)
            else:
                stack.append(base)
    return unread


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def _affected(classes: list[ClassInfo]) -> tuple[list[str], list[str]]:
    by_base: dict[str, set[str]] = {}
    for cls in classes:
        for base in _unread_bases(cls):
            by_base.setdefault(base, set()).add(cls.name)
    return sorted({name for names in by_base.values() for name in names}), sorted(by_base)


def _unreadable(index: ProjectIndex) -> list[tuple[str, str]]:
    """(path, reason) of kvpress modules that exist on disk but could not be read."""
    found = []
    for name in sorted(index.unloaded_modules):
        path = resolve_module(name) if name.split(".")[0] == KVPRESS else None
        if path is None:
            continue
        try:
            load_source(path)
        except SourceError as err:
            found.append((str(path), str(err)))
    return found


def unread_base_warning(index: ProjectIndex, presses: list[ClassInfo]) -> str | None:
    """One line for the run, or None when every kvpress base of the run's classes was read."""
    if resolve_module(KVPRESS) is None:
        names, bases = _affected(presses)
        if not names:
            return None
        return (f"kvpress is not installed for this Python (not found on sys.path): {_some(names)} inherit(s) from "
                f"{_some(bases)} without the inherited code being audited, so findings in inherited methods are "
                "missing; install kvpress in the Python that runs kvaudit")
    unreadable = _unreadable(index)
    if not unreadable:
        return None
    targets = [cls for info in index.modules for cls in info.classes.values()]
    names, bases = _affected(targets)
    if not names:
        return None
    path, reason = unreadable[0]
    more = f" (and {len(unreadable) - 1} more of its files)" if len(unreadable) > 1 else ""
    return (f"kvpress's source could not be read ({path}: {reason}{more}): {_some(names)} derive(s) from "
            f"{_some(bases)} and could not be audited")

"""Say when a press inherits from kvpress classes whose source kvaudit could not read.

Bases are followed into kvpress's installed source. When kvpress is missing, or its files
cannot be read, a subclass of ``kvpress.ChunkKVPress`` is still recognised as a press (by
the name it imports), but the methods it inherits are not audited, so their findings are
missing. :func:`unread_base_note` turns that into one note for the whole run.
"""

from __future__ import annotations

from .analysis.index import ClassInfo, ProjectIndex
from .targets import resolve_module

MAX_NAMED = 3  # bases and presses named in the note; the rest are counted


def _unread_bases(press: ClassInfo) -> set[str]:
    """The kvpress classes in ``press``'s ancestry that were trusted by name, not read (iterative: chains can be long)."""
    unread: set[str] = set()
    stack, seen = [press], set()
    while stack:
        cls = stack.pop()
        if id(cls) in seen:
            continue
        seen.add(id(cls))
        for base in cls.resolved_bases:
            if isinstance(base, str):
                unread.add(base)
            else:
                stack.append(base)
    return unread


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_NAMED])
    return shown + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")


def unread_base_note(presses: list[ClassInfo]) -> str | None:
    """One line for the run, or None when every base of every press was read."""
    by_base: dict[str, list[str]] = {}
    for press in presses:
        for base in sorted(_unread_bases(press)):
            by_base.setdefault(base, []).append(press.name)
    if not by_base:
        return None
    location = resolve_module("kvpress")
    why = ("kvpress is not installed for this Python (not found on sys.path)" if location is None
           else f"kvpress's source under {location.parent} could not be read")
    names = sorted({name for pressed in by_base.values() for name in pressed})
    return (f"{why}: {_some(names)} inherit(s) from {_some(sorted(by_base))} without the inherited code being "
            "audited, so findings in inherited methods are missing; install kvpress in the Python that runs kvaudit")

"""Turn command-line targets (files, directories, dotted module names) into source files.

A module name is resolved to its file **without importing anything**: importing
``kvpress`` would import torch, and the static path must stay light and never run
the audited code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

# The embedded default target of `kvaudit check`: the installed kvpress ChunkKVPress.
DEFAULT_TARGET = "kvpress.presses.chunkkv_press"

_SKIP_DIRS = {".git", ".hg", ".venv", "venv", "__pycache__", "node_modules", ".tox", ".mypy_cache"}


@dataclass(frozen=True)
class TargetError:
    """A target that names nothing auditable, with a one-line reason."""

    target: str
    message: str


def looks_like_module(target: str) -> bool:
    """Whether ``target`` reads as a dotted module name (and not as a ``.py`` path)."""
    parts = target.split(".")
    return all(part.isidentifier() for part in parts) and not target.endswith(".py")


def resolve_module(name: str, search_path: list[str] | None = None) -> Path | None:
    """Return the source file of module ``name`` without importing it or its parents.

    ``PathFinder`` only looks at the file system: it finds the top-level package on
    ``sys.path``, then each submodule inside the previous package's folder.
    """
    locations: list[str] | None = search_path if search_path is not None else sys.path
    spec = None
    parts = name.split(".")
    for depth in range(len(parts)):
        qualified = ".".join(parts[: depth + 1])
        spec = PathFinder.find_spec(qualified, locations)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if depth < len(parts) - 1 and not locations:
            return None  # a plain module has no submodules
    if spec is None or spec.origin in (None, "namespace"):
        return None
    origin = Path(spec.origin)
    return origin if origin.suffix == ".py" else None


def _python_files(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.rglob("*.py")):
        if not any(part in _SKIP_DIRS for part in path.relative_to(directory).parts[:-1]):
            found.append(path)
    return found


def expand_targets(targets: list[str]) -> tuple[list[Path], list[TargetError]]:
    """Expand targets into a sorted, de-duplicated list of files, plus one error per bad target.

    A missing target is an error; the others are still returned.
    """
    files: dict[Path, None] = {}  # keyed by resolved path: a file named twice is audited once
    errors: list[TargetError] = []
    for target in targets:
        path = Path(target)
        if not target.strip():
            errors.append(TargetError(target, "empty target name"))
        elif path.is_dir():
            found = _python_files(path)
            if not found:
                errors.append(TargetError(target, f"{target}: directory holds no Python files"))
            files.update(dict.fromkeys(p.resolve() for p in found))
        elif path.exists():
            files[path.resolve()] = None
        elif looks_like_module(target):
            resolved = resolve_module(target)
            if resolved is None:
                errors.append(TargetError(target, f"{target}: no such file, directory or importable module"))
            elif resolved.name == "__init__.py":  # a package names all of its modules
                files.update(dict.fromkeys(p.resolve() for p in _python_files(resolved.parent)))
            else:
                files[resolved.resolve()] = None
        else:
            errors.append(TargetError(target, f"{target}: no such file or directory"))
    return list(files), errors


def named_files(targets: list[str]) -> set[Path]:
    """The files a target names one by one (not found by searching a directory or package)."""
    named = set()
    for target in targets:
        path = Path(target)
        if target.strip() and path.is_file():
            named.add(path.resolve())
        elif target.strip() and not path.exists() and looks_like_module(target):
            resolved = resolve_module(target)
            if resolved is not None and resolved.name != "__init__.py":
                named.add(resolved.resolve())
    return named


def split_class_selector(target: str) -> tuple[str, str | None]:
    """Split ``path/or.module::ClassName`` into the target and the optional class name."""
    if "::" in target:
        base, _, cls = target.rpartition("::")
        return base, cls or None
    return target, None

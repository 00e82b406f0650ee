"""Turn command-line targets (files, directories, dotted module names) into source files.

A module name is resolved to its file **without importing anything**: importing
``kvpress`` would import torch, and the static path must stay light and never run
the audited code.

Directories are walked without following directory symlinks (a symlinked folder is not
entered, so link loops cannot recur), without opening anything but folders, and skipping:
the excludes (:data:`DEFAULT_EXCLUDE`, or the configuration's ``exclude`` plus
``extend-exclude``), what ``.gitignore`` files ignore, and the pseudo-file systems
(:data:`SYSTEM_DIRS`). FIFOs, devices and sockets named ``*.py`` are skipped, never opened.
A ``.py`` path that cannot be stat'ed (a symlink loop, a broken link) and a folder that
cannot be listed are errors of that path only. A path named on the command line is
audited even when an exclude matches it, unless ``force-exclude`` is set.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass, field
from importlib.machinery import BYTECODE_SUFFIXES, EXTENSION_SUFFIXES
from pathlib import Path
from typing import TYPE_CHECKING

from .source import display_path, irregular_kind, os_reason

if TYPE_CHECKING:
    from pathspec import GitIgnoreSpec


# Skipped when found in a walk (Ruff's defaults, plus caches and dist-packages). `exclude`
# in the configuration replaces them; `extend-exclude` adds to them.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".bzr", ".direnv", ".eggs", ".git", ".git-rewrite", ".hg", ".ipynb_checkpoints", ".mypy_cache", ".nox",
    ".pants.d", ".pyenv", ".pytest_cache", ".pytype", ".ruff_cache", ".svn", ".tox", ".venv", ".vscode",
    "__pycache__", "__pypackages__", "_build", "buck-out", "build", "dist", "dist-packages", "node_modules",
    "site-packages", "venv",
)
# Pseudo-file systems: never walked into (walking `/` must end, and must not read /proc).
SYSTEM_DIRS = frozenset({"/proc", "/sys", "/dev", "/run"})
TARGET_ECHO = 300  # a target echoed in an error message is cut to this many characters


@dataclass(frozen=True)
class TargetError:
    """A target that names nothing auditable, with a one-line reason."""

    target: str
    message: str


@dataclass(frozen=True)
class WalkSettings:
    """What a walk skips; ``root`` is the folder path globs are relative to (None: the working directory)."""

    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    extend_exclude: tuple[str, ...] = ()
    respect_gitignore: bool = True
    force_exclude: bool = False
    root: Path | None = None


def looks_like_module(target: str) -> bool:
    """Whether ``target`` reads as a dotted module name (and not as a ``.py`` path)."""
    parts = target.split(".")
    return all(part.isidentifier() for part in parts) and not target.endswith(".py")


@dataclass(frozen=True)
class ModuleLocation:
    """Where a module's source lies: a ``.py`` file, and for a package its folder(s).

    ``origin`` is None for a namespace package (folders without ``__init__.py``, possibly
    several) and for a module that exists only compiled (an extension or ``.pyc``).
    """

    origin: Path | None
    folders: tuple[Path, ...] = ()

    @property
    def is_namespace(self) -> bool:
        return self.origin is None and bool(self.folders)


_COMPILED_SUFFIXES = (*EXTENSION_SUFFIXES, *BYTECODE_SUFFIXES)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _find_in(part: str, locations: list[Path]) -> ModuleLocation | None:
    """One step of the path-based import search for ``part`` in ``locations``, from the file system only.

    The order is CPython's ``FileFinder``: in each folder, a package (``part/__init__``),
    then a module (``part.py``, preferred here to a compiled one); a folder without
    ``__init__`` is a namespace portion, kept while the later folders are searched.
    """
    portions: list[Path] = []
    for location in locations:
        folder = location / part
        if _is_dir(folder):
            if _is_file(folder / "__init__.py"):
                return ModuleLocation(folder / "__init__.py", (folder,))
            if any(_is_file(folder / f"__init__{suffix}") for suffix in _COMPILED_SUFFIXES):
                return ModuleLocation(None, (folder,))  # a package with no source to read
        if _is_file(location / f"{part}.py"):
            return ModuleLocation(location / f"{part}.py")
        if any(_is_file(location / f"{part}{suffix}") for suffix in _COMPILED_SUFFIXES):
            return ModuleLocation(None)
        if _is_dir(folder):
            portions.append(folder)
    return ModuleLocation(None, tuple(portions)) if portions else None


def find_module(name: str, search_path: list[str] | None = None) -> ModuleLocation | None:
    """Locate module ``name`` without importing it or its parents; never raises.

    ``importlib.machinery.PathFinder`` is not used: for a namespace package inside a
    regular package it looks the parent up in ``sys.modules`` (a ``KeyError`` when the
    parent was never imported), and it would consult import hooks.
    """
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None  # e.g. a relative import that climbs above the top-level package
    entries = search_path if search_path is not None else sys.path
    locations = [Path(entry or ".") for entry in entries if isinstance(entry, str)]
    found: ModuleLocation | None = None
    for depth, part in enumerate(parts):
        found = _find_in(part, locations)
        if found is None:
            return None
        if depth < len(parts) - 1:
            if not found.folders:
                return None  # a plain module has no submodules
            locations = list(found.folders)
    return found


def resolve_module(name: str, search_path: list[str] | None = None) -> Path | None:
    """Return the source file of module ``name`` without importing it or its parents.

    None when there is no such module, or no ``.py`` file for it (a namespace package,
    a compiled module); see :func:`find_module` for the folders of a namespace package.
    """
    found = find_module(name, search_path)
    return found.origin if found is not None else None


@dataclass
class _Excludes:
    """Exclude globs split as Ruff does: a glob without ``/`` tests the entry's own name, so a
    folder above the walked root (``site-packages`` for an installed package) never excludes
    it; a glob with ``/`` tests the path relative to the configuration folder."""

    names: GitIgnoreSpec | None
    paths: GitIgnoreSpec | None
    root: Path

    @classmethod
    def of(cls, settings: WalkSettings) -> _Excludes:
        from .globs import compile_globs

        globs = [*settings.exclude, *settings.extend_exclude]
        names = [g for g in globs if "/" not in g.rstrip("/")]
        paths = [g for g in globs if "/" in g.rstrip("/")]
        root = (settings.root or Path.cwd()).resolve()
        return cls(compile_globs(names) if names else None, compile_globs(paths) if paths else None, root)

    def excludes_named(self, path: Path, is_dir: bool) -> bool:
        """``force-exclude``: whether a path named on the command line, or a folder above it inside
        the configuration folder, is excluded."""
        if self.excludes(path, is_dir):
            return True
        return any(self.excludes(parent, True) for parent in path.parents if parent.is_relative_to(self.root)
                   and parent != self.root)

    def excludes(self, path: Path, is_dir: bool, use_paths: bool = True) -> bool:
        from .globs import relative_key

        if self.names is not None and self.names.match_file(path.name + ("/" if is_dir else "")):
            return True
        return use_paths and self.paths is not None and self.paths.match_file(relative_key(path, self.root, is_dir))


@dataclass
class _GitIgnore:
    folder: Path
    spec: GitIgnoreSpec


def _read_gitignore(folder: Path) -> _GitIgnore | None:
    from .globs import compile_globs
    from .source import SourceError, read_capped

    try:
        text = read_capped(folder / ".gitignore", 1 << 20).decode("utf-8", errors="replace")
    except SourceError:
        return None
    spec = compile_globs(text.splitlines(), strict=False)
    return _GitIgnore(folder, spec) if spec.patterns else None


def _repository_gitignores(root: Path) -> list[_GitIgnore]:
    """The .gitignore files of ``root``'s parents, up to the repository's top (none outside a repository)."""
    parents = []
    for folder in root.parents:
        parents.append(folder)
        if (folder / ".git").exists():
            break
    else:
        return []
    found = [_read_gitignore(folder) for folder in reversed(parents)]
    # A folder named on purpose is walked even if a parent's .gitignore ignores it.
    return [g for g in found if g is not None and not _ignored_by(g, root, True)]


def _ignored_by(gitignore: _GitIgnore, path: Path, is_dir: bool) -> bool:
    from .globs import relative_key

    return gitignore.spec.match_file(relative_key(path, gitignore.folder, is_dir))


def _gitignored(gitignores: list[_GitIgnore], path: Path, is_dir: bool) -> bool:
    # The deepest .gitignore that says something about the path decides (a later `!x` re-includes).
    from .globs import relative_key

    for gitignore in reversed(gitignores):
        verdict = gitignore.spec.check_file(relative_key(path, gitignore.folder, is_dir)).include
        if verdict is not None:
            return verdict
    return False


@dataclass
class Walk:
    """What one walk found: the files, and how many ``.py`` files and folders it left out on purpose."""

    files: list[Path] = field(default_factory=list)
    excluded: int = 0


def walk_python_files(root: Path, settings: WalkSettings, excludes: _Excludes | None = None,
                      errors: list[TargetError] | None = None) -> Walk:
    """The ``*.py`` regular files under ``root``, sorted; problems with single paths go to ``errors``."""
    from .globs import relative_key

    excludes = excludes or _Excludes.of(settings)
    errors = errors if errors is not None else []
    root = Path(os.path.abspath(root))
    # Path globs never exclude what lies in the named root because of the root's own path.
    use_paths = excludes.paths is None or not excludes.paths.match_file(relative_key(root, excludes.root, True))
    gitignores = _repository_gitignores(root) if settings.respect_gitignore else []
    walk = Walk()
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[tuple[Path, list[_GitIgnore]]] = [(root, gitignores)]
    while stack:
        folder, inherited = stack.pop()
        try:
            info = os.stat(folder)
        except OSError as err:
            errors.append(TargetError(display_path(folder), f"{display_path(folder)}: {os_reason(err)}"))
            continue
        if (info.st_dev, info.st_ino) in seen_dirs:  # a bind mount or hard-linked folder loop
            continue
        seen_dirs.add((info.st_dev, info.st_ino))
        active = inherited
        if settings.respect_gitignore:
            own = _read_gitignore(folder)
            active = [*inherited, own] if own is not None else inherited
        try:
            with os.scandir(folder) as entries:
                listing = sorted(entries, key=lambda e: e.name)
        except OSError as err:
            errors.append(TargetError(display_path(folder), f"{display_path(folder)}: cannot list folder: "
                                      f"{err.strerror or err}"))
            continue
        subfolders = []
        for entry in listing:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if (str(path) in SYSTEM_DIRS or excludes.excludes(path, True, use_paths)
                        or (active and _gitignored(active, path, True))):
                    walk.excluded += 1
                    continue
                subfolders.append(path)
            elif entry.name.endswith(".py"):
                if excludes.excludes(path, False, use_paths) or (active and _gitignored(active, path, False)):
                    walk.excluded += 1
                    continue
                try:
                    mode = entry.stat().st_mode  # follows a file symlink: a loop raises ELOOP here
                except OSError as err:  # named as walked: a broken link's target does not exist
                    shown = display_path(path, follow_link=False)
                    errors.append(TargetError(shown, f"{shown}: {os_reason(err)}"))
                    continue
                if stat.S_ISREG(mode):
                    walk.files.append(path)
                # FIFOs, devices, sockets and symlinked folders named *.py: skipped, never opened.
        stack.extend((sub, active) for sub in reversed(subfolders))
    walk.files.sort()
    return walk


def cut_target(target: str) -> str:
    """``target`` cut to :data:`TARGET_ECHO` characters, for messages."""
    return target if len(target) <= TARGET_ECHO else target[: TARGET_ECHO - 1] + "…"


def _canonical(path: Path) -> Path:
    """The resolved path (a file named twice through different paths is audited once)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python 3.11
        return Path(os.path.abspath(path))


def expand_targets(targets: list[str], settings: WalkSettings | None = None,
                   walked: dict[str, list[Path]] | None = None) -> tuple[list[Path], list[TargetError]]:
    """Expand targets into a sorted, de-duplicated list of files, plus one error per bad target or path.

    A missing target is an error; the others are still returned. ``walked``, if given, gets the
    files each folder target holds (resolved, as returned), whatever path led to them.
    """
    settings = settings or WalkSettings()
    compiled: list[_Excludes] = []

    def excludes() -> _Excludes:  # compiled on first need: naming one file never loads pathspec
        if not compiled:
            compiled.append(_Excludes.of(settings))
        return compiled[0]

    files: dict[Path, None] = {}  # keyed by resolved path: a file named twice is audited once
    errors: list[TargetError] = []

    def add_walk(folder: Path, target: str) -> list[Path]:
        before = len(errors)
        walk = walk_python_files(folder, settings, excludes(), errors)
        if not walk.files and len(errors) == before:
            left_out = f" ({walk.excluded} excluded or git-ignored)" if walk.excluded else ""
            errors.append(TargetError(target, f"{cut_target(target)}: directory holds no Python files{left_out}"))
        found = [_canonical(p) for p in walk.files]
        files.update(dict.fromkeys(found))
        return found

    for target in targets:
        if not target.strip():
            errors.append(TargetError(target, "empty target name"))
            continue
        path = Path(target)
        try:
            info = os.stat(path)
        except OSError as err:
            info = None
            if err.errno != errno.ENOENT or path.is_symlink():  # a loop, a broken link, no permission...
                errors.append(TargetError(target, f"{cut_target(target)}: {os_reason(err)}"))
                continue
        except ValueError:  # a NUL character in the name
            errors.append(TargetError(target, f"{cut_target(target)!r}: not a valid path"))
            continue
        if info is not None and settings.force_exclude and excludes().excludes_named(
                Path(os.path.abspath(path)), stat.S_ISDIR(info.st_mode)):
            continue
        if info is not None and stat.S_ISDIR(info.st_mode):
            found = add_walk(path, target)
            if walked is not None:
                walked.setdefault(target, []).extend(found)
        elif info is not None:
            kind = irregular_kind(info.st_mode)
            if kind is not None:  # refused from its stat alone: /dev/zero or a FIFO would never end
                errors.append(TargetError(target, f"{cut_target(target)}: {kind}"))
            else:
                files[_canonical(path)] = None
        elif looks_like_module(target):
            resolved = resolve_module(target)
            location = find_module(target) if resolved is None else None
            if location is not None and location.is_namespace:  # its folders hold its modules
                for folder in location.folders:
                    add_walk(folder, target)
            elif resolved is None:
                errors.append(TargetError(target, f"{cut_target(target)}: no such file, directory or importable module"))
            elif resolved.name == "__init__.py":  # a package names all of its modules
                add_walk(resolved.parent, target)
            else:
                files[_canonical(resolved)] = None
        else:
            errors.append(TargetError(target, f"{cut_target(target)}: no such file or directory"))
    return list(files), errors


def split_class_selector(target: str) -> tuple[str, str | None]:
    """Split ``path/or.module::ClassName`` into the target and the optional class name."""
    if "::" in target:
        base, _, cls = target.rpartition("::")
        return base, cls or None
    return target, None

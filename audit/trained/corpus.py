"""The training corpus of the tiny trained model: the running interpreter's standard library source.

CPython's standard library is under the PSF licence and lies on every machine that runs kvaudit, so
the text itself is never stored in kvaudit: the manifest records each file's path and SHA-256, and
the held-out prompts are read back from the interpreter's own files (see :mod:`kvaudit.trained`).
Standard library only; no torch.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Left out: tests (much generated or repetitive data), IDLE and lib2to3 (large, self-contained
# applications), encodings (character tables, not code) and pydoc_data (English prose).
EXCLUDED_DIRS = frozenset({
    "test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "encodings", "pydoc_data",
    "site-packages", "dist-packages", "__pycache__", "lib-dynload",
})
# One file in HELDOUT_EVERY is held out, chosen by a hash of its path: the split does not depend on
# which other files a Python version has, so a file keeps its side across versions.
HELDOUT_EVERY = 20


@dataclass(frozen=True)
class SourceFile:
    """One standard-library file of the corpus."""

    path: str  # relative to the standard library root, with forward slashes
    text: str
    sha256: str  # of the file's bytes
    heldout: bool


def stdlib_root() -> Path:
    """The running interpreter's standard library folder (a venv's base interpreter's)."""
    return Path(sysconfig.get_paths()["stdlib"])


def is_heldout(path: str) -> bool:
    """Whether the file at ``path`` (relative, forward slashes) belongs to the held-out split."""
    return int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % HELDOUT_EVERY == 0


def _excluded(relative: Path) -> bool:
    return any(part in EXCLUDED_DIRS or part.startswith("config-") for part in relative.parts[:-1])


def read_source(root: Path, path: str) -> tuple[str, str] | None:
    """``(text, sha256)`` of ``root/path``, or None when the file is missing or not UTF-8."""
    try:
        data = (root / path).read_bytes()
        return data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    except (OSError, UnicodeDecodeError):
        return None


def collect(root: Path | None = None) -> tuple[list[SourceFile], list[str]]:
    """Every corpus file under ``root`` (default: :func:`stdlib_root`), sorted by path.

    Returns
    -------
    files, skipped
        The files read, and the paths left out because they are not UTF-8.
    """
    root = stdlib_root() if root is None else root
    files: list[SourceFile] = []
    skipped: list[str] = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if _excluded(relative):
            continue
        name = relative.as_posix()
        read = read_source(root, name)
        if read is None:
            skipped.append(name)
            continue
        files.append(SourceFile(name, read[0], read[1], is_heldout(name)))
    return files, skipped

"""Baselines: record today's findings, then fail only on new ones (as Semgrep and Bandit do).

``kvaudit check --baseline FILE --write-baseline`` writes every current finding to FILE;
``kvaudit check --baseline FILE`` afterwards drops the findings FILE holds and reports (and
fails on) the others. A finding matches a baseline entry when its rule, its press and its
fingerprint (:mod:`kvaudit.fingerprint`: the finding's source line, not its number) agree,
so findings survive lines added or removed elsewhere in the file.

The file is JSON, sorted and byte-stable (no timestamp), meant to be committed::

    {
      "schema": "kvaudit.baseline/1",
      "kvaudit": "0.1.0",
      "findings": [
        {"rule": "KVA101", "press": "ChunkKVPress", "path": "src/chunk.py",
         "fingerprint": "3f1c…", "line": 69, "message": "…"}
      ]
    }

``path`` is relative to the baseline file's folder (so the same baseline works from any
working directory) and is part of the fingerprint; ``line`` and ``message`` are there for
the reader and play no part in matching.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from . import __version__
from .fingerprint import fingerprints
from .model import AuditResult, Finding
from .source import SourceError, read_capped

SCHEMA = "kvaudit.baseline/1"
MAX_BASELINE_BYTES = 64 << 20
Key = tuple[str, str, str]  # rule, press, fingerprint


class BaselineError(Exception):
    """A baseline file that cannot be read or is not a kvaudit baseline; ``str(err)`` is one line."""


@dataclass(frozen=True)
class Applied:
    """What a baseline did to a run."""

    hidden: int  # findings the baseline holds, no longer reported
    stale: int  # baseline entries no finding matched any more (fixed, or moved out of the run)


def _relative(finding: Finding, folder: Path) -> str:
    absolute = os.path.abspath(finding.path)
    return Path(os.path.relpath(absolute, folder)).as_posix()


def _keys(result: AuditResult, folder: Path) -> list[tuple[Key, Finding, str]]:
    findings = result.findings
    prints = fingerprints(findings, lambda f: _relative(f, folder))
    return [((f.rule, f.press or "", fp), f, _relative(f, folder)) for f, fp in zip(findings, prints)]


def write_baseline(result: AuditResult, path: Path) -> int:
    """Write every finding of ``result`` to ``path``; returns how many. Raises OSError."""
    folder = Path(os.path.abspath(path)).parent
    entries = [{"rule": key[0], "press": key[1], "path": shown, "fingerprint": key[2], "line": finding.line,
                "message": finding.message} for key, finding, shown in _keys(result, folder)]
    entries.sort(key=lambda e: (e["path"], e["line"], e["rule"], e["fingerprint"]))
    document = {"schema": SCHEMA, "kvaudit": __version__, "findings": entries}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(entries)


def load_baseline(path: Path) -> set[Key]:
    """The keys a baseline file holds; raises :class:`BaselineError`."""
    if not path.exists() and not path.is_symlink():
        raise BaselineError(f"{path}: baseline file not found (write it with --write-baseline)")
    try:
        document = json.loads(read_capped(path, MAX_BASELINE_BYTES).decode("utf-8"))
    except SourceError as err:
        raise BaselineError(f"{path}: cannot read baseline: {str(err).replace(', see --max-file-size', '')}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        reason = str(err).splitlines()[0][:120] if not isinstance(err, RecursionError) else "nested too deeply"
        raise BaselineError(f"{path}: not a kvaudit baseline (invalid JSON: {reason})") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA or not isinstance(document.get("findings"), list):
        raise BaselineError(f"{path}: not a kvaudit baseline (expected a JSON object with schema {SCHEMA!r})")
    keys: set[Key] = set()
    for number, entry in enumerate(document["findings"]):
        fields = [entry.get(name) for name in ("rule", "press", "fingerprint")] if isinstance(entry, dict) else None
        if fields is None or not all(isinstance(value, str) for value in fields):
            raise BaselineError(f"{path}: findings[{number}] needs string rule, press and fingerprint")
        keys.add((fields[0], fields[1], fields[2]))
    return keys


def apply_baseline(result: AuditResult, keys: set[Key], path: Path) -> Applied:
    """Drop from ``result`` the findings ``keys`` (loaded from ``path``) hold."""
    folder = Path(os.path.abspath(path)).parent
    known = [(key, finding) for key, finding, _ in _keys(result, folder) if key in keys]
    drop = {id(finding) for _, finding in known}
    for press in result.presses:
        press.findings = [f for f in press.findings if id(f) not in drop]
    result.extra_findings = [f for f in result.extra_findings if id(f) not in drop]
    return Applied(hidden=len(drop), stale=len(keys - {key for key, _ in known}))

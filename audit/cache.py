"""An optional on-disk cache, as Ruff has: a re-run on an unchanged tree reads files, never parses them.

Two kinds of entries, under ``<cache dir>/<kvaudit version>-<code fingerprint>/``:

- ``scans.json``: the prefilter's scan of each file (``analysis/prefilter.py``), keyed by
  path and the digest of its text, so that a changed tree rescans only the changed files;
- ``runs/<key>.json``: the whole result of one run. The key digests kvaudit's version and
  code, Python's version, the working directory, ``sys.path``, the targets, every option
  that can change a result, and every file of the run with the digest of its text (or its
  error). Files read outside the run (kvpress's own source) are recorded with their
  digests, and every module looked up on disk with the file it resolved to (or none); a
  hit is used only when all of them are still the same (a package created beside a module
  that shadows it, a module that appears, one that goes: each is a miss).

Safety:
- every entry is signed (HMAC-SHA256) with a secret kept outside the project, in the
  user's cache folder (``$XDG_CACHE_HOME/kvaudit/cache.key``): a cache folder committed to
  a repository, or written by anyone else, is never trusted. Without a usable secret
  the cache is off;
- entries are JSON (never pickle), written and checked by :mod:`kvaudit.codec`, written to a temporary file and renamed into place, so
  concurrent runs never see half an entry; any unreadable, unsigned, mis-signed or
  malformed entry is ignored, never a traceback;
- the cache folder holds a ``.gitignore`` of ``*`` and a ``CACHEDIR.TAG``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import __version__
from .analysis.prefilter import TextScan
from .codec import from_data, to_data
from .model import AuditResult

CACHE_DIR_NAME = ".kvaudit_cache"
_MAX_RUNS = 64
_MAX_SCANS = 200_000
# Options that only say how to run: they never change a result, so they are not in the key.
_RUN_ONLY_OPTIONS = frozenset({"debug", "jobs", "cache_dir"})
_TAG = "Signature: 8a477f597d28d172789f06886806bc55\n# kvaudit's cache (see README.md); safe to delete.\n"


def default_cache_dir(project_root: Path | None) -> Path:
    """``.kvaudit_cache`` in the project root (the configuration file's folder), else the working directory."""
    return (project_root or Path.cwd()) / CACHE_DIR_NAME


def _secret_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kvaudit" / "cache.key"


def _secret() -> bytes | None:
    """The signing secret, created on first use (mode 0600); None when it cannot be had."""
    path = _secret_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(secrets.token_bytes(32))
        data = path.read_bytes()
    except (OSError, RuntimeError, ValueError):  # no home, read-only, a race lost: no cache
        return None
    return data if len(data) == 32 else None


def _code_fingerprint() -> str:
    """Changes whenever kvaudit's own files change (a development install keeps its version)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.blake2b(digest_size=8)
    from . import rules

    for folder in (package, Path(rules.__file__).resolve().parent):
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".py", ".toml"):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                digest.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def file_digest(path: Path) -> str | None:
    try:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    except OSError:
        return None


class RunCache:
    """The cache of one folder; every method swallows its own failures."""

    def __init__(self, folder: Path, secret: bytes) -> None:
        self.folder = folder
        self._secret = secret

    @classmethod
    def open(cls, directory: Path | None) -> RunCache | None:
        if directory is None:
            return None
        secret = _secret()
        if secret is None:
            return None
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, content in ((".gitignore", "# Created by kvaudit.\n*\n"), ("CACHEDIR.TAG", _TAG)):
                if not (directory / name).exists():
                    _write_atomic(directory / name, content.encode())
            folder = directory / f"{__version__}-{_code_fingerprint()}"
            (folder / "runs").mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return cls(folder, secret)

    # -- signed JSON files -----------------------------------------------------------------
    def _read(self, path: Path) -> Any:
        try:
            raw = path.read_bytes()
            mac, _, body = raw.partition(b"\n")
            expected = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(mac, expected):
                return None
            return json.loads(body)
        except (OSError, ValueError):
            return None

    def _write(self, path: Path, data: Any) -> None:
        body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).hexdigest().encode()
        try:
            _write_atomic(path, mac + b"\n" + body)
        except OSError:
            pass  # a read-only or full disk: the run's result stands, uncached

    # -- scans ---------------------------------------------------------------------------------
    def scans(self, paths) -> dict[Path, tuple[str, TextScan]]:
        """The cached scan of each of ``paths``: (digest of the text it was made from, scan)."""
        stored = self._read(self.folder / "scans.json")
        if not isinstance(stored, dict):
            return {}
        found = {}
        for path in paths:
            entry = stored.get(str(path))
            try:
                found[path] = (str(entry[0]), from_data(entry[1], TextScan))
            except (TypeError, KeyError, IndexError, ValueError):
                continue
        return found

    # -- whole runs ------------------------------------------------------------------------------
    def run_key(self, targets: list[str], options, scans) -> str:
        settings = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
                    if f.name not in _RUN_ONLY_OPTIONS}
        payload = {
            "kvaudit": [__version__, self.folder.name],
            "python": list(sys.version_info[:3]),
            "cwd": os.getcwd(),
            "sys.path": list(sys.path),
            "targets": list(targets),
            "options": to_data(settings),
            "files": [[str(s.path), s.display, s.status, s.message, s.digest, s.named] for s in scans],
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def load_result(self, key: str | None) -> AuditResult | None:
        if key is None:
            return None
        entry = self._read(self.folder / "runs" / f"{key}.json")
        try:
            if not isinstance(entry, dict) or entry.get("key") != key:
                return None
            for path, digest in entry["read"].items():
                if file_digest(Path(path)) != digest:
                    return None
            from .targets import resolve_module

            for name, roots, found in entry["modules"]:
                now = resolve_module(name, roots)
                if (str(now) if now is not None else None) != found:
                    return None
            return from_data(entry["result"], AuditResult)
        except Exception:  # noqa: BLE001 - a malformed entry is a miss, never a traceback
            return None

    def store(self, key: str | None, result: AuditResult, scans, aux_paths: set[str],
              lookups: list[tuple[str, list[str] | None, str | None]]) -> None:
        if key is None:
            return
        try:
            read = {path: file_digest(Path(path)) for path in sorted(aux_paths)}
            modules = sorted({(n, tuple(r) if r is not None else None, f) for n, r, f in lookups}, key=repr)
            entry = {"key": key, "read": read, "modules": [[n, list(r) if r is not None else None, f]
                                                          for n, r, f in modules],
                     "result": to_data(result)}
            self._write(self.folder / "runs" / f"{key}.json", entry)
            self._store_scans(scans)
            self._prune()
        except Exception:  # noqa: BLE001 - the cache must never break a run
            return

    def _store_scans(self, scans) -> None:
        fresh = {str(s.path): [s.digest, to_data(s.scan)] for s in scans if s.scan is not None and s.digest}
        if not fresh:
            return
        stored = self._read(self.folder / "scans.json")
        merged = stored if isinstance(stored, dict) and len(stored) + len(fresh) <= _MAX_SCANS else {}
        merged.update(fresh)
        self._write(self.folder / "scans.json", merged)

    def _prune(self) -> None:
        try:
            runs = sorted((self.folder / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
        except OSError:
            return
        for stale in runs[:-_MAX_RUNS]:
            try:
                stale.unlink()
            except OSError:
                pass


def _write_atomic(path: Path, data: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise

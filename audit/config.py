"""Configuration: a ``[tool.kvaudit]`` table in ``pyproject.toml``, or ``kvaudit.toml``.

``kvaudit.toml`` holds the same keys at its top level. Keys::

    select = ["KVA1", "KVA201"]          # rule ids or prefixes to run (default: all)
    ignore = ["KVA203"]                  # rule ids or prefixes to skip
    fail-on = "warning"                  # error | warning | info | never (default: error)
    per-path-ignores = { "tests/**" = ["KVA201"], "legacy_*.py" = ["KVA1"] }
    exclude = ["build", "vendored/"]     # replaces the default excludes (see DEFAULT_EXCLUDE)
    extend-exclude = ["generated/**"]    # adds to them
    respect-gitignore = true             # skip what .gitignore files ignore when walking folders
    force-exclude = false                # also exclude files named on the command line
    max-file-size = "16MiB"              # bytes, or a number with KiB/MiB/GiB (KB/MB/GB: powers of 1000); 0: no cap

    [[claim-overrides]]                  # [[tool.kvaudit.claim-overrides]] in pyproject.toml
    path = "src/presses/**"              # a glob; optional when `class` is given
    class = "My*Press"                   # a class name or glob; optional when `path` is given
    add = ["layer-index-reuse"]          # claims forced onto the matching presses
    drop = []                            # claims taken away from them

    [[press-bases]]                      # [[tool.kvaudit.press-bases]]: press-like classes of other code
    class = "mlx_lm.models.cache.KVCache"  # a base class: dotted (where it is imported from) or a bare name
    entry-methods = ["update_and_fetch"] # the methods the framework calls on each layer
    score-calls = ["chunkkv_update"]     # calls that score and select ("self.scores_fn" or a bare name)
    layer-index = ["_layer_id"]          # attributes (or entry parameters) holding the layer's index (default: layer_idx)
    state = "per-layer"                  # "per-layer": one object per layer; "shared" (default): one for all

Path globs (``exclude``, ``extend-exclude``, ``per-path-ignores``, ``claim-overrides.path``)
use .gitignore syntax, matched by ``pathspec`` (see :mod:`kvaudit.globs`), relative to the
configuration file's folder: ``*`` and ``?`` stay inside one path component, ``**`` spans
any number, a glob without ``/`` (but a trailing one) matches a file or folder name in any
folder, a trailing ``/`` matches folders only. Files outside that folder are matched by their
absolute path. Every glob is compiled when the file is loaded: a bad one is a config error.

    [[accept]]                           # [[tool.kvaudit.accept]]: a deviation the press documents
    press = "TOVAPress"                  # a class name or glob
    claim = "decode-compression"         # the claim it departs from
    reason = "kvpress compresses at prefill only (BasePress docstring)"


Discovery: ``--config PATH``; otherwise the first folder, from the working directory up,
that holds a ``kvaudit.toml``, or a ``pyproject.toml`` with a ``[tool.kvaudit]`` table
(``kvaudit.toml`` wins in the same folder). Command-line flags override the file.

Validation is strict: an unknown key, a value of the wrong type, an unknown rule id or
claim, a bad glob or a bad ``fail-on`` raises :class:`ConfigError`, whose message is one
line naming the file and the key (values it echoes are cut short). The CLI prints it and
exits 2. A setting that is valid but probably a mistake lands in :attr:`Config.warnings`, which
the CLI prints on stderr. Settings that leave no rule to run (``select = []``, ``ignore = ["KVA"]``)
are warned about by the CLI, once the command line has overridden the file (``cli/check.py``).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .analysis.index import KVPRESS_LAYER_INDEX, PressBase
from .exitcodes import FAIL_ON_CHOICES
from .globs import GlobError, glob_matches, validate_glob
from .source import SourceError, display_path, read_capped, split_lines

KVAUDIT_TOML = "kvaudit.toml"
PYPROJECT = "pyproject.toml"
KEYS = ("select", "ignore", "fail-on", "per-path-ignores", "claim-overrides", "press-bases", "exclude",
        "extend-exclude", "respect-gitignore", "force-exclude", "max-file-size", "accept")
# A configuration file is small; a bigger one is not read (it may be a FIFO, a device, a mistake).
MAX_CONFIG_BYTES = 1 << 20
ECHO_WIDTH = 80  # values echoed in error messages are cut to this many characters
OVERRIDE_KEYS = ("path", "class", "add", "drop")
PRESS_BASE_KEYS = ("class", "entry-methods", "score-calls", "layer-index", "state")
PRESS_BASE_STATES = ("shared", "per-layer")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
ACCEPT_KEYS = ("press", "claim", "reason")


class ConfigError(Exception):
    """A configuration problem; ``str(err)`` is one line naming the file and the key."""


@dataclass(frozen=True)
class ClaimOverride:
    """Force (``add``) or remove (``drop``) claims on presses matching ``path`` and ``class``."""

    path: str | None
    cls: str | None
    add: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    origin: str = "configuration"  # e.g. "kvaudit.toml claim-overrides[0]"

    def matches(self, press_name: str, press_path: str, root: Path | None) -> bool:
        if self.path is not None and not path_matches(self.path, press_path, root):
            return False
        return self.cls is None or fnmatch.fnmatchcase(press_name, self.cls)


@dataclass(frozen=True)
class Acceptance:
    """A violated dynamic claim the maintainers accept: the press (name or glob), the claim, why."""

    press: str
    claim: str
    reason: str
    origin: str = "configuration"  # e.g. "pyproject.toml accept[0]"
    path: str | None = None  # the configuration file, as shown
    line: int = 1  # the line of its `press = ...` in that file

    def matches(self, press_name: str, claim: str) -> bool:
        return claim == self.claim and fnmatch.fnmatchcase(press_name, self.press)


@dataclass
class Config:
    """A validated configuration; every field None/empty when no file was found."""

    path: Path | None = None
    select: list[str] | None = None
    ignore: list[str] | None = None
    fail_on: str | None = None
    per_path_ignores: dict[str, list[str]] = field(default_factory=dict)
    claim_overrides: list[ClaimOverride] = field(default_factory=list)
    press_bases: list[PressBase] = field(default_factory=list)
    exclude: list[str] | None = None  # None: the default excludes (targets.DEFAULT_EXCLUDE)
    extend_exclude: list[str] = field(default_factory=list)
    respect_gitignore: bool | None = None
    force_exclude: bool | None = None
    max_file_size: int | None = None  # bytes; 0: no cap; None: the default
    warnings: list[str] = field(default_factory=list)  # valid, but probably not what was meant
    acceptances: list[Acceptance] = field(default_factory=list)

    @property
    def root(self) -> Path | None:
        """The folder globs are relative to."""
        return self.path.parent.resolve() if self.path is not None else None


# -- discovery and loading ---------------------------------------------------------------


def cut(text: str, width: int = ECHO_WIDTH) -> str:
    """``text`` cut to ``width`` characters, for error messages."""
    return text if len(text) <= width else text[: width - 1] + "…"


def echo(value: object, width: int = ECHO_WIDTH) -> str:
    """``repr(value)`` cut to ``width`` characters, for error messages."""
    return cut(repr(value), width)


def _has_tool_table(path: Path) -> bool:
    try:
        text = read_capped(path, MAX_CONFIG_BYTES).decode("utf-8")
    except (SourceError, UnicodeDecodeError):
        return False
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError):
        # A broken pyproject.toml is not ours to judge, unless it holds our table: then
        # load_config reports it instead of the run silently dropping the settings.
        return "[tool.kvaudit" in text
    return isinstance(data.get("tool"), dict) and "kvaudit" in data["tool"]


def find_config(start: Path) -> Path | None:
    """The configuration file that applies in ``start``: nearest folder first."""
    folder = start.resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / KVAUDIT_TOML).is_file():
            return candidate / KVAUDIT_TOML
        pyproject = candidate / PYPROJECT
        if pyproject.is_file() and _has_tool_table(pyproject):
            return pyproject
    return None


def load_config(path: Path) -> Config:
    """Read and validate ``path``; raises :class:`ConfigError`."""
    shown = display_path(path)
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"{shown}: configuration file not found")
    try:
        # Never opened unless it is a regular file: a FIFO or a device would block or never end.
        text = read_capped(path, MAX_CONFIG_BYTES).decode("utf-8")
    except SourceError as err:
        raise ConfigError(f"{shown}: cannot read configuration: {str(err).replace('--max-file-size', 'configuration files')}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: cannot read configuration: not UTF-8 (invalid byte at offset {err.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{shown}: invalid TOML: {str(err).splitlines()[0][:ECHO_WIDTH * 2]}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: invalid TOML: nested too deeply") from None
    if path.name == KVAUDIT_TOML:
        table, prefix = data, ""
    else:
        tool = data.get("tool", {})
        if not isinstance(tool, dict) or "kvaudit" not in tool:
            raise ConfigError(f"{shown}: no [tool.kvaudit] table")
        table, prefix = tool["kvaudit"], "tool.kvaudit."
        if not isinstance(table, dict):
            raise ConfigError(f"{shown}: [tool.kvaudit] must be a table")
    return _validate(table, path, shown, prefix, text)


def discover(config_path: Path | None = None, start: Path | None = None) -> Config:
    """The configuration given by ``--config``, or found from ``start`` (the working directory) up."""
    path = config_path if config_path is not None else find_config(start or Path.cwd())
    return load_config(path) if path is not None else Config()


# -- validation --------------------------------------------------------------------------


@cache
def _rule_ids() -> tuple[str, ...]:
    from .rule import all_rules

    return tuple(rule.id for rule in all_rules())


def _known_claims() -> set[str]:
    from .claims import known_claims

    return known_claims()


def _validate(table: dict, path: Path, shown: str, prefix: str, text: str = "") -> Config:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{shown}: {prefix}{key}: {problem}")

    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{shown}: unknown key {prefix}{cut(unknown[0])} (known keys: {', '.join(KEYS)})")

    config = Config(path=path)
    if "select" in table:
        config.select = _rule_list(table["select"], lambda p: fail("select", p))
    if "ignore" in table:
        config.ignore = _rule_list(table["ignore"], lambda p: fail("ignore", p))
    if "fail-on" in table:
        value = table["fail-on"]
        if not isinstance(value, str) or value not in FAIL_ON_CHOICES:
            raise fail("fail-on", f"must be one of {', '.join(FAIL_ON_CHOICES)}, not {echo(value)}")
        config.fail_on = value
    if "per-path-ignores" in table:
        value = table["per-path-ignores"]
        if not isinstance(value, dict):
            raise fail("per-path-ignores", "must be a table of glob = [rule ids]")
        for glob, ids in value.items():
            key = f'per-path-ignores."{cut(glob)}"'
            _glob(glob, lambda p, k=key: fail(k, p))
            config.per_path_ignores[glob] = _rule_list(ids, lambda p, k=key: fail(k, p))
    for key in ("exclude", "extend-exclude"):
        if key in table:
            globs = _glob_list(table[key], lambda p, k=key: fail(k, p))
            if key == "exclude":
                config.exclude = globs
            else:
                config.extend_exclude = globs
    for key in ("respect-gitignore", "force-exclude"):
        if key in table:
            if not isinstance(table[key], bool):
                raise fail(key, f"must be true or false, not {echo(table[key])}")
            setattr(config, key.replace("-", "_"), table[key])
    if "max-file-size" in table:
        try:
            config.max_file_size = parse_size(table["max-file-size"])
        except ValueError as err:
            raise fail("max-file-size", str(err)) from None
    for number, entry in _array_of_tables(table, "claim-overrides", "", fail):
        config.claim_overrides.append(_claim_override(entry, f"claim-overrides[{number}]", fail, shown))
    for number, entry in _array_of_tables(table, "press-bases", "", fail):
        config.press_bases.append(_press_base(entry, f"press-bases[{number}]", fail, shown))
    for number, entry in _array_of_tables(table, "accept", " with press, claim and reason", fail):
        config.acceptances.append(_acceptance(entry, f"accept[{number}]", fail, shown, text, number))
    return config


def _array_of_tables(table: dict, key: str, hint: str, fail) -> list[tuple[int, object]]:
    """The numbered entries of ``[[key]]``; none when the key is absent, an error when it is not an array."""
    if key not in table:
        return []
    value = table[key]
    if not isinstance(value, list):
        raise fail(key, f"must be an array of tables ([[{key}]]){hint}")
    return list(enumerate(value))


def _names(value: object, what: str, fail, required: bool, dotted: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of {what}, not {echo(value)}")
    if required and not value:
        raise fail(f"must name at least one of {what}")
    for name in value:
        if not (_DOTTED.match(name) if dotted else name.isidentifier()):
            raise fail(f"{echo(name)} is not a Python {'name or dotted name' if dotted else 'name'}")
    return tuple(dict.fromkeys(value))


def _press_base(entry: object, where: str, fail, shown: str) -> PressBase:
    """One ``[[press-bases]]`` entry: a base class whose subclasses are audited as presses."""
    if not isinstance(entry, dict):
        raise fail(where, "must be a table with class, entry-methods and score-calls")
    unknown = sorted(set(entry) - set(PRESS_BASE_KEYS))
    if unknown:
        raise fail(f"{where}.{unknown[0]}", f"unknown key (known keys: {', '.join(PRESS_BASE_KEYS)})")
    for key in ("class", "entry-methods", "score-calls"):
        if key not in entry:
            raise fail(where, f"needs `{key}` (keys: class, entry-methods, score-calls; optional layer-index, state)")
    cls = entry["class"]
    if not isinstance(cls, str) or not _DOTTED.match(cls):
        raise fail(f"{where}.class", f"must be a class name or a dotted path such as pkg.module.Class, not {echo(cls)}")
    entry_methods = _names(entry["entry-methods"], "method names", lambda p: fail(f"{where}.entry-methods", p),
                           required=True, dotted=False)
    score_calls = _names(entry["score-calls"], "call names", lambda p: fail(f"{where}.score-calls", p), required=True)
    layer_index = _names(entry.get("layer-index", list(KVPRESS_LAYER_INDEX)), "attribute names",
                         lambda p: fail(f"{where}.layer-index", p), required=True, dotted=False)
    state = entry.get("state", "shared")
    if state not in PRESS_BASE_STATES:
        raise fail(f"{where}.state", f"must be one of {', '.join(PRESS_BASE_STATES)}, not {echo(state)}")
    return PressBase(cls=cls, entry_methods=entry_methods, score_calls=score_calls, layer_index=layer_index,
                     per_layer_state=state == "per-layer", origin=f"{shown} {where}")


def _acceptance(entry: object, where: str, fail, shown: str, text: str, number: int) -> Acceptance:
    if not isinstance(entry, dict):
        raise fail(where, "must be a table with press, claim and reason")
    unknown = sorted(set(entry) - set(ACCEPT_KEYS))
    if unknown:
        raise fail(f"{where}.{unknown[0]}", f"unknown key (known keys: {', '.join(ACCEPT_KEYS)})")
    for key in ACCEPT_KEYS:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise fail(f"{where}.{key}", "a non-empty string is required" if key not in entry
                       else f"must be a non-empty string, not {entry[key]!r}")
    known = _known_claims()
    if entry["claim"] not in known:
        raise fail(f"{where}.claim", f"unknown claim {entry['claim']!r} (known: {', '.join(sorted(known))})")
    return Acceptance(entry["press"], entry["claim"], " ".join(entry["reason"].split()), f"{shown} {where}", shown,
                      _table_line(text, "accept", number))


def _table_line(text: str, name: str, number: int) -> int:
    """The line of the ``number``-th ``[[name]]`` (or ``[[tool.kvaudit.name]]``) header in ``text``; 1 if not found."""
    headers = [n for n, line in enumerate(split_lines(text), start=1)
               if re.match(rf"\s*\[\[\s*(tool\.kvaudit\.)?{re.escape(name)}\s*\]\]", line)]
    return headers[number] if number < len(headers) else 1


def rule_ids_option(values: list[str], option: str) -> list[str]:
    """Validate rule ids given on the command line (``--select``/``--ignore``) as the file's are."""
    return _rule_list(list(values), lambda problem: ConfigError(f"{option}: {problem}"))


def split_commas(values: list[str] | None) -> list[str] | None:
    """``["KVA101,KVA202", "KVA1"]`` -> ``["KVA101", "KVA202", "KVA1"]`` (repeated or comma-separated options)."""
    if values is None:
        return None
    return [part.strip() for value in values for part in value.split(",")]


def _rule_list(value: object, fail) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of rule ids, not {echo(value)}")
    ids = _rule_ids()
    checked = []
    for item in value:
        code = item.strip().upper()
        if not code or not any(rule_id.startswith(code) for rule_id in ids):
            raise fail(f"unknown rule id {echo(item)} (`kvaudit rules` lists them)")
        checked.append(code)
    return checked


def _glob(value: object, fail) -> str:
    if not isinstance(value, str):
        raise fail(f"must be a glob string, not {echo(value)}")
    if value.lstrip().startswith("!"):  # excludes are split by kind (name / path), so order cannot re-include
        raise fail(f"a leading '!' (re-include) works in .gitignore files only: {echo(value)}")
    try:
        validate_glob(value)
    except GlobError as err:
        raise fail(f"{err}: {echo(value)}") from None
    return value


def _glob_list(value: object, fail) -> list[str]:
    if not isinstance(value, list):
        raise fail(f"must be a list of globs, not {echo(value)}")
    return [_glob(item, fail) for item in value]


def glob_option(values: list[str] | None, option: str) -> list[str] | None:
    """Validate globs given on the command line (``--exclude``/``--extend-exclude``) as the file's are."""
    if values is None:
        return None
    return _glob_list(split_commas(values), lambda problem: ConfigError(f"{option}: {problem}"))


_SIZE = re.compile(r"(?i)^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$")
_SCALE = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gib": 1 << 30,
          "kb": 10**3, "mb": 10**6, "gb": 10**9}


def parse_size(value: object) -> int:
    """Bytes from ``16777216``, ``"16MiB"``, ``"16M"`` (powers of 1024) or ``"16MB"`` (of 1000); 0 means no cap."""
    if isinstance(value, bool):
        raise ValueError(f"must be a size such as 16MiB, not {echo(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, not {value}")
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"must be a size such as 16MiB, 10MB or 1048576, not {echo(value)}")
    return int(match.group(1)) * _SCALE[match.group(2).lower()]


def _claim_list(value: object, fail) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of claim ids, not {echo(value)}")
    known = _known_claims()
    for claim in value:
        if claim not in known:
            raise fail(f"unknown claim {echo(claim)} (known: {', '.join(sorted(known))})")
    return tuple(dict.fromkeys(value))


def _claim_override(entry: object, where: str, fail, shown: str) -> ClaimOverride:
    if not isinstance(entry, dict):
        raise fail(where, "must be a table with path/class and add/drop")
    unknown = sorted(set(entry) - set(OVERRIDE_KEYS))
    if unknown:
        raise fail(f"{where}.{cut(unknown[0])}", f"unknown key (known keys: {', '.join(OVERRIDE_KEYS)})")
    for key in ("path", "class"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise fail(f"{where}.{key}", f"must be a non-empty string, not {echo(entry[key])}")
    if "path" in entry:
        _glob(entry["path"], lambda p: fail(f"{where}.path", p))
    if "path" not in entry and "class" not in entry:
        raise fail(where, "needs `path` or `class` (or both) to say which presses it applies to")
    add = _claim_list(entry.get("add", []), lambda p: fail(f"{where}.add", p))
    drop = _claim_list(entry.get("drop", []), lambda p: fail(f"{where}.drop", p))
    if not add and not drop:
        raise fail(where, "needs `add` or `drop` (a non-empty list of claims)")
    both = sorted(set(add) & set(drop))
    if both:
        raise fail(where, f"claim {both[0]!r} is both added and dropped")
    return ClaimOverride(entry.get("path"), entry.get("class"), add, drop, origin=f"{shown} {where}")


# -- matching ------------------------------------------------------------------------------


def path_matches(pattern: str, shown: str, root: Path | None) -> bool:
    """Whether ``pattern`` matches the file shown as ``shown`` (a run's display path)."""
    return glob_matches(pattern, shown, root)


def ignored_for_path(rule_id: str, shown: str, per_path_ignores: dict[str, list[str]],
                     root: Path | None) -> bool:
    """Whether ``per-path-ignores`` turns ``rule_id`` off for this file."""
    return any(any(rule_id.startswith(code) for code in codes) and path_matches(glob, shown, root)
               for glob, codes in per_path_ignores.items())

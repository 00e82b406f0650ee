"""Configuration: a ``[tool.kvaudit]`` table in ``pyproject.toml``, or ``kvaudit.toml``.

``kvaudit.toml`` holds the same keys at its top level. Keys::

    select = ["KVA1", "KVA201"]          # rule ids or prefixes to run (default: all)
    ignore = ["KVA203"]                  # rule ids or prefixes to skip
    fail-on = "warning"                  # error | warning | info | never (default: error)
    per-path-ignores = { "tests/**" = ["KVA201"], "legacy_*.py" = ["KVA1"] }

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

Globs are matched against paths relative to the configuration file's folder: ``*`` and
``?`` stay inside one path component, ``**`` spans any number; a glob without ``/``
also matches a file name in any folder.

Discovery: ``--config PATH``; otherwise the first folder, from the working directory up,
that holds a ``kvaudit.toml``, or a ``pyproject.toml`` with a ``[tool.kvaudit]`` table
(``kvaudit.toml`` wins in the same folder). Command-line flags override the file.

Validation is strict: an unknown key, a value of the wrong type, an unknown rule id or
claim, or a bad ``fail-on`` raises :class:`ConfigError`, whose message is one line naming
the file and the key. The CLI prints it and exits 2.
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
from .model import CONFIG_OVERRIDE, Claim
from .source import display_path

KVAUDIT_TOML = "kvaudit.toml"
PYPROJECT = "pyproject.toml"
KEYS = ("select", "ignore", "fail-on", "per-path-ignores", "claim-overrides", "press-bases")
OVERRIDE_KEYS = ("path", "class", "add", "drop")
PRESS_BASE_KEYS = ("class", "entry-methods", "score-calls", "layer-index", "state")
PRESS_BASE_STATES = ("shared", "per-layer")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


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

    @property
    def root(self) -> Path | None:
        """The folder globs are relative to."""
        return self.path.parent.resolve() if self.path is not None else None


# -- discovery and loading ---------------------------------------------------------------


def _has_tool_table(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError):
        return False
    except tomllib.TOMLDecodeError:
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{shown}: cannot read configuration: {getattr(err, 'strerror', None) or err}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{shown}: invalid TOML: {err}") from None
    if path.name == KVAUDIT_TOML:
        table, prefix = data, ""
    else:
        tool = data.get("tool", {})
        if not isinstance(tool, dict) or "kvaudit" not in tool:
            raise ConfigError(f"{shown}: no [tool.kvaudit] table")
        table, prefix = tool["kvaudit"], "tool.kvaudit."
        if not isinstance(table, dict):
            raise ConfigError(f"{shown}: [tool.kvaudit] must be a table")
    return _validate(table, path, shown, prefix)


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


def _validate(table: dict, path: Path, shown: str, prefix: str) -> Config:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{shown}: {prefix}{key}: {problem}")

    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ConfigError(f"{shown}: unknown key {prefix}{unknown[0]} (known keys: {', '.join(KEYS)})")

    config = Config(path=path)
    if "select" in table:
        config.select = _rule_list(table["select"], lambda p: fail("select", p))
    if "ignore" in table:
        config.ignore = _rule_list(table["ignore"], lambda p: fail("ignore", p))
    if "fail-on" in table:
        value = table["fail-on"]
        if not isinstance(value, str) or value not in FAIL_ON_CHOICES:
            raise fail("fail-on", f"must be one of {', '.join(FAIL_ON_CHOICES)}, not {value!r}")
        config.fail_on = value
    if "per-path-ignores" in table:
        value = table["per-path-ignores"]
        if not isinstance(value, dict):
            raise fail("per-path-ignores", "must be a table of glob = [rule ids]")
        for glob, ids in value.items():
            key = f'per-path-ignores."{glob}"'
            if not glob.strip():
                raise fail(key, "empty glob")
            config.per_path_ignores[glob] = _rule_list(ids, lambda p, k=key: fail(k, p))
    if "claim-overrides" in table:
        value = table["claim-overrides"]
        if not isinstance(value, list):
            raise fail("claim-overrides", "must be an array of tables ([[claim-overrides]])")
        for number, entry in enumerate(value):
            config.claim_overrides.append(_claim_override(entry, f"claim-overrides[{number}]", fail, shown))
    if "press-bases" in table:
        value = table["press-bases"]
        if not isinstance(value, list):
            raise fail("press-bases", "must be an array of tables ([[press-bases]])")
        for number, entry in enumerate(value):
            config.press_bases.append(_press_base(entry, f"press-bases[{number}]", fail, shown))
    return config


def _names(value: object, what: str, fail, required: bool, dotted: bool = True) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of {what}, not {value!r}")
    if required and not value:
        raise fail(f"must name at least one of {what}")
    for name in value:
        if not (_DOTTED.match(name) if dotted else name.isidentifier()):
            raise fail(f"{name!r} is not a Python {'name or dotted name' if dotted else 'name'}")
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
        raise fail(f"{where}.class", f"must be a class name or a dotted path such as pkg.module.Class, not {cls!r}")
    entry_methods = _names(entry["entry-methods"], "method names", lambda p: fail(f"{where}.entry-methods", p),
                           required=True, dotted=False)
    score_calls = _names(entry["score-calls"], "call names", lambda p: fail(f"{where}.score-calls", p), required=True)
    layer_index = _names(entry.get("layer-index", list(KVPRESS_LAYER_INDEX)), "attribute names",
                         lambda p: fail(f"{where}.layer-index", p), required=True, dotted=False)
    state = entry.get("state", "shared")
    if state not in PRESS_BASE_STATES:
        raise fail(f"{where}.state", f"must be one of {', '.join(PRESS_BASE_STATES)}, not {state!r}")
    return PressBase(cls=cls, entry_methods=entry_methods, score_calls=score_calls, layer_index=layer_index,
                     per_layer_state=state == "per-layer", origin=f"{shown} {where}")


def rule_ids_option(values: list[str], option: str) -> list[str]:
    """Validate rule ids given on the command line (``--select``/``--ignore``) as the file's are."""
    return _rule_list(list(values), lambda problem: ConfigError(f"{option}: {problem}"))


def _rule_list(value: object, fail) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of rule ids, not {value!r}")
    ids = _rule_ids()
    checked = []
    for item in value:
        code = item.strip().upper()
        if not code or not any(rule_id.startswith(code) for rule_id in ids):
            raise fail(f"unknown rule id {item!r} (`kvaudit rules` lists them)")
        checked.append(code)
    return checked


def _claim_list(value: object, fail) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(f"must be a list of claim ids, not {value!r}")
    known = _known_claims()
    for claim in value:
        if claim not in known:
            raise fail(f"unknown claim {claim!r} (known: {', '.join(sorted(known))})")
    return tuple(dict.fromkeys(value))


def _claim_override(entry: object, where: str, fail, shown: str) -> ClaimOverride:
    if not isinstance(entry, dict):
        raise fail(where, "must be a table with path/class and add/drop")
    unknown = sorted(set(entry) - set(OVERRIDE_KEYS))
    if unknown:
        raise fail(f"{where}.{unknown[0]}", f"unknown key (known keys: {', '.join(OVERRIDE_KEYS)})")
    for key in ("path", "class"):
        if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
            raise fail(f"{where}.{key}", f"must be a non-empty string, not {entry[key]!r}")
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


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1:end]
                body = "^" + body[1:] if body.startswith("!") else body
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def path_matches(pattern: str, shown: str, root: Path | None) -> bool:
    """Whether ``pattern`` matches the file shown as ``shown`` (a run's display path)."""
    candidates = [shown]
    path = Path(shown)
    absolute = path if path.is_absolute() else Path.cwd() / path
    base = root if root is not None else Path.cwd().resolve()
    try:
        candidates.insert(0, absolute.resolve().relative_to(base).as_posix())
    except ValueError:
        candidates.append(absolute.resolve().as_posix())
    pattern = pattern.removeprefix("./")
    if "/" not in pattern.rstrip("/"):
        candidates.append(path.name)
    if pattern.endswith("/"):
        pattern += "**"
    regex = _glob_regex(pattern)
    return any(regex.match(candidate) for candidate in candidates)


def apply_claim_overrides(press_name: str, press_path: str, press_line: int, claims: list[Claim],
                          overrides: list[ClaimOverride], root: Path | None) -> list[Claim]:
    """``claims`` after the overrides matching this press dropped and added theirs (in file order)."""
    if not overrides:
        return claims
    from .claims import forced_origin

    claims = list(claims)
    for override in overrides:
        if not override.matches(press_name, press_path, root):
            continue
        claims = [c for c in claims if c.id not in override.drop]
        present = {c.id for c in claims}
        for claim in override.add:
            if claim not in present:
                claims.append(Claim(id=claim, line=press_line, origin=forced_origin(claim, override.origin, CONFIG_OVERRIDE)))
    return sorted(claims, key=lambda c: c.id)


def ignored_for_path(rule_id: str, shown: str, per_path_ignores: dict[str, list[str]],
                     root: Path | None) -> bool:
    """Whether ``per-path-ignores`` turns ``rule_id`` off for this file."""
    return any(any(rule_id.startswith(code) for code in codes) and path_matches(glob, shown, root)
               for glob, codes in per_path_ignores.items())

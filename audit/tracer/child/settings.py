"""How the tracer builds and runs kvpress's own presses: ``rules/presses.toml`` (pure Python).

Some presses cannot run with defaults on the tiny model (they need a scorer, eager attention, a
delimiter token), and some defaults leave a claim unexercised (a decoding press that compresses
every 512 steps, SimLayerKV's threshold on random weights), and some load learned files from the
Hugging Face Hub (they get a seeded stand-in: :mod:`.standins`). The file says, per kvpress class,
what the tracer does instead and why; reports show the why beside the press.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

SETTINGS = "presses.toml"  # a data file of kvaudit.rules
KEYS = ("press", "attention", "also-attention", "ratio", "batch", "delimiter", "decode", "stand-in", "not-checkable",
        "why")
DEFAULT_RATIO_ATTRIBUTE = "compression_ratio"


@dataclass(frozen=True)
class PressSettings:
    """The settings of one kvpress class (see ``rules/presses.toml`` for the keys)."""

    name: str
    press: str | None = None
    attention: str | None = None
    also_attention: str | None = None  # run the first prompt under this implementation too
    ratio: str | None = DEFAULT_RATIO_ATTRIBUTE  # None: no ratio to set
    batch: int | None = None
    delimiter: dict[str, Any] | None = None
    decode_inside: bool = True  # False: decode outside `with press(model)`, as kvpress's pipeline does
    stand_in: str | None = None  # the seeded stand-in for its Hub files (kvaudit.tracer.child.standins)
    not_checkable: tuple[str, ...] = ()  # claims that, with the stand-in, would judge the learned values
    why: str | None = None


@cache
def load_settings() -> dict[str, PressSettings]:
    package = __package__.split(".", 1)[0]  # kvaudit
    data = tomllib.loads((files(f"{package}.rules") / SETTINGS).read_text(encoding="utf-8"))
    settings = {}
    for name, entry in data.items():
        unknown = set(entry) - set(KEYS)
        if unknown:  # a typo would silently change how a press is audited
            raise ValueError(f"{SETTINGS}: [{name}] unknown key {sorted(unknown)[0]!r}")
        ratio = entry.get("ratio", DEFAULT_RATIO_ATTRIBUTE)
        settings[name] = PressSettings(
            name=name,
            press=entry.get("press"),
            attention=entry.get("attention"),
            also_attention=entry.get("also-attention"),
            ratio=None if ratio is False else str(ratio),
            batch=entry.get("batch"),
            delimiter=entry.get("delimiter"),
            decode_inside=entry.get("decode", "inside") != "outside",
            stand_in=entry.get("stand-in"),
            not_checkable=tuple(entry.get("not-checkable", ())),
            why=entry.get("why"),
        )
    return settings


def _is_kvpress(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] == "kvpress"


def settings_for(cls: type) -> PressSettings:
    """The settings of ``cls`` when it is a kvpress class; else what it inherits (eager attention only)."""
    table = load_settings()
    if _is_kvpress(cls) and cls.__name__ in table:
        return table[cls.__name__]
    for base in cls.__mro__[1:]:
        inherited = table.get(base.__name__) if _is_kvpress(base) else None
        if inherited is not None and inherited.attention:
            return PressSettings(name=cls.__name__, attention=inherited.attention,
                                 why=f"inherits from {base.__name__}: {inherited.why}")
    return PressSettings(name=cls.__name__)


def stand_in_for(cls: type) -> PressSettings | None:
    """The settings that give ``cls`` a stand-in: its own as a kvpress class, else those of its nearest
    kvpress base that has one (a subclass runs the base's loading code, which the stand-in feeds)."""
    table = load_settings()
    for base in cls.__mro__:
        found = table.get(base.__name__) if _is_kvpress(base) else None
        if found is not None and found.stand_in:
            return found
    return None

"""The one converter between kvaudit's typed records and plain data (msgspec).

The findings model (:mod:`kvaudit.model`), the tracer's wire (:mod:`kvaudit.tracer.wire`), the
on-disk cache (:mod:`kvaudit.cache`) and the JSON documents all go through these two functions:

* :func:`to_data` turns a record into JSON-safe builtins, fields in declaration order (so the
  records are declared in the order their JSON contract lists the keys); a field whose value is
  ``msgspec.UNSET`` is left out (optional keys such as a trace's ``reference``);
* :func:`from_data` rebuilds a record of a given type, checking every field's type on the way
  (a malformed frame, cache entry or document raises :class:`CodecError`, one line).

Nothing here imports torch; msgspec loads in a few milliseconds.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

UNSET = msgspec.UNSET
UnsetType = msgspec.UnsetType


class CodecError(ValueError):
    """Data that does not have the shape of the type it should convert to; ``str()`` is one line."""


def _encode_extra(value: Any) -> Any:
    if isinstance(value, PurePath):  # options hold paths; every record of the findings model holds strings
        return str(value)
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _decode_extra(kind: type, value: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, PurePath) and isinstance(value, str):
        return Path(value)
    raise NotImplementedError(f"cannot decode {kind!r}")


def to_data(value: Any) -> Any:
    """``value`` (a record, or builtins holding records) as JSON-safe builtins."""
    return msgspec.to_builtins(value, enc_hook=_encode_extra)


def from_data(data: Any, kind: type[T]) -> T:
    """A ``kind`` rebuilt from :func:`to_data`'s output (or parsed JSON); :class:`CodecError` when it does not fit."""
    try:
        return msgspec.convert(data, kind, dec_hook=_decode_extra)
    except msgspec.ValidationError as error:
        raise CodecError(str(error).splitlines()[0][:200]) from None


def encode(value: Any) -> bytes:
    """``value`` as compact JSON bytes (the tracer's frames and protocol lines)."""
    return msgspec.json.encode(value, enc_hook=_encode_extra)


def decode(raw: bytes | str, kind: type[T]) -> T:
    """A ``kind`` parsed from JSON bytes; :class:`CodecError` on bad JSON or a bad shape."""
    try:
        return msgspec.json.decode(raw, type=kind, dec_hook=_decode_extra)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise CodecError(str(error).splitlines()[0][:200]) from None

"""Header fields read once and edited in one pass: the one implementation of a decision's edits.

    index = HeaderIndex(request.headers.fields)      # resolve.HeaderLookup, for resolve()
    request.headers.fields = edited_fields(request.headers.fields, edits)   # the router
    HeaderList([("Host", "a.test")]).apply(decision.headers)                # explain, diff, tests

mitmproxy's `Headers` lowercases and encodes every field's name again on each `get_all` and
each `headers[name] = value`; a dispatch asked about five look-ups and four edits of every
request that way (a tenth of the runner's CPU per request went to the router). Here the fields,
as mitmproxy keeps them (bytes, names compared ASCII-lowercased, text as UTF-8 with surrogate
escapes), are read once and written once, with the same result as mitmproxy's own operations:
a patch replaces the first field of that name in place (keeping its spelling) and drops the
others, or is added at the end; an append is added at the end; a removal drops every field of
that name (tests/test_request_edits.py compares both on generated requests). `HeaderList` holds
fields as text, for what runs without mitmproxy, and edits them with the same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .model import HeaderAppend, HeaderEdit, HeaderRemoval

Fields = tuple[tuple[bytes, bytes], ...]
_ENCODING, _ERRORS = "utf-8", "surrogateescape"  # mitmproxy's, for header text


def _raw(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


class HeaderIndex:
    """Header fields by lowercase name, decoded once (`resolve.HeaderLookup`)."""

    __slots__ = ("_by_name", "_items")

    def __init__(self, fields: Fields) -> None:
        self._items = [
            (name.decode(_ENCODING, _ERRORS), value.decode(_ENCODING, _ERRORS))
            for name, value in fields
        ]
        by_name: dict[bytes, list[str]] = {}
        for (name, _), (_, value) in zip(fields, self._items, strict=True):
            by_name.setdefault(name.lower(), []).append(value)
        self._by_name = by_name

    def get_all(self, name: str) -> list[str]:
        return list(self._by_name.get(_raw(name).lower(), ()))

    def items(self, multi: bool = True) -> list[tuple[str, str]]:
        """Every field in order, as mitmproxy's `Headers.items(multi=True)`."""
        return list(self._items)


def edited_fields(fields: Fields, edits: Iterable[HeaderEdit]) -> Fields:
    """`fields` with the edits applied in order, as mitmproxy's `Headers` would apply them."""
    current: Sequence[tuple[bytes, bytes]] = fields
    for edit in edits:
        name = _raw(edit.name)
        lowered = name.lower()
        if isinstance(edit, HeaderRemoval):
            current = [field for field in current if field[0].lower() != lowered]
        elif isinstance(edit, HeaderAppend):
            current = [*current, (name, _raw(edit.value))]
        else:
            current = _patched(current, name, lowered, _raw(edit.value))
    return tuple(current)


def _patched(
    fields: Sequence[tuple[bytes, bytes]], name: bytes, lowered: bytes, value: bytes
) -> list[tuple[bytes, bytes]]:
    result = []
    placed = False
    for field in fields:
        if field[0].lower() != lowered:
            result.append(field)
        elif not placed:
            result.append((field[0], value))  # in place, with the spelling the request had
            placed = True
    if not placed:
        result.append((name, value))
    return result


def _text(raw: bytes) -> str:
    return raw.decode(_ENCODING, _ERRORS)


class HeaderList:
    """Header fields as text, in order, as a request carries them (`resolve.HeaderLookup`).

    `explain`, `diff` and tests read and edit them as the router edits a request's fields.
    """

    def __init__(self, fields: Sequence[tuple[str, str]] = ()) -> None:
        self.fields = list(fields)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key.lower() == name.lower()]

    def items(self, multi: bool = True) -> list[tuple[str, str]]:
        """Every field in order (mitmproxy's `Headers.items(multi=True)`)."""
        return list(self.fields)

    def apply(self, edits: Iterable[HeaderEdit]) -> None:
        """Edit the fields in order, so that a later edit wins (a Host patch last)."""
        raw = tuple((_raw(name), _raw(value)) for name, value in self.fields)
        self.fields = [(_text(name), _text(value)) for name, value in edited_fields(raw, edits)]

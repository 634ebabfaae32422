"""An ordered, case-insensitive list of header fields, as a request carries them.

    headers = HeaderList([("Host", "a.test"), ("environment", "dev")])
    decision.apply_headers(headers)

It reads and writes the way mitmproxy's `Headers` does (`get_all`, `items`, and `set` as
`headers[name] = value`, `add`, `remove` as `del headers[name]`), so that `explain` and tests
see exactly what the addon sends, without mitmproxy.
"""

from __future__ import annotations

from collections.abc import Sequence


class HeaderList:
    """Header fields in order; names compare without regard to case."""

    def __init__(self, fields: Sequence[tuple[str, str]] = ()) -> None:
        self.fields = list(fields)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key.lower() == name.lower()]

    def items(self, multi: bool = True) -> list[tuple[str, str]]:
        """Every field in order (mitmproxy's `Headers.items(multi=True)`)."""
        return list(self.fields)

    def add(self, name: str, value: str) -> None:
        self.fields.append((name, value))

    def remove(self, name: str) -> None:
        self.fields = [(key, value) for key, value in self.fields if key.lower() != name.lower()]

    def set(self, name: str, value: str) -> None:
        """Replace the first field of that name in place and drop the others, else append."""
        positions = [i for i, (key, _) in enumerate(self.fields) if key.lower() == name.lower()]
        if not positions:
            self.fields.append((name, value))
            return
        first, *others = positions
        self.fields[first] = (self.fields[first][0], value)
        for index in reversed(others):
            del self.fields[index]


def parse_header(text: str) -> tuple[str, str]:
    """`'Name: value'` as a (name, value) field, the way curl's -H takes it."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise ValueError(f"header {text!r} is not of the form 'Name: value'")
    return name.strip(), value.strip()

"""Parse a destination URL (`http://host:8080/base`) into a `Destination`."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ..core.model import DEFAULT_PORTS, Destination

_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
_BAD_PATH_CHARACTER = re.compile(r"[\x00-\x20\x7f]")


def parse_destination(text: str) -> Destination:
    """Turn an absolute http(s) URL into a Destination; raise ValueError saying what is wrong."""
    stripped = text.strip()
    if not stripped:
        raise ValueError("expected an absolute http:// or https:// URL, got an empty string")
    try:
        parts = urlsplit(stripped)
    except ValueError as e:  # e.g. a malformed [IPv6] literal
        raise ValueError(f"{text!r} is not a valid URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        hint = f" (did you mean 'http://{stripped}'?)" if "://" not in stripped else ""
        raise ValueError(f"expected an absolute http:// or https:// URL, got {text!r}{hint}")
    if "@" in parts.netloc:
        raise ValueError(f"{text!r}: credentials (user:password@) are not allowed in a destination")
    if parts.query or parts.fragment or stripped.endswith(("?", "#")):
        raise ValueError(f"{text!r}: a destination may not have a query or fragment")
    host = _host(parts.netloc, parts.hostname, text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    if _BAD_PATH_CHARACTER.search(parts.path):
        raise ValueError(f"{text!r}: the base path contains whitespace or a control character")
    return Destination(
        scheme=scheme,
        host=host,
        port=port or DEFAULT_PORTS[scheme],
        base_path=parts.path.rstrip("/"),
    )


def _host(netloc: str, hostname: str | None, text: str) -> str:
    if not hostname:
        raise ValueError(f"{text!r}: the URL has no host")
    if netloc.startswith("["):
        try:
            return str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise ValueError(f"{text!r}: {hostname!r} is not a valid IPv6 address") from None
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{text!r}: {hostname!r} is not a valid host name") from None
    if not _HOSTNAME.fullmatch(ascii_host):
        raise ValueError(f"{text!r}: {hostname!r} is not a valid host name")
    return ascii_host  # the form that goes on the wire and into the Host header

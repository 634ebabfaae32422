"""The copy of a request a mirror gets, as HTTP/1.1 bytes, and sending it on its own connection.

    copy = MirrorCopy.of(mirror, "POST", "/x?q=1", headers.fields, body, http2=False)
    status = await send(copy, tls=None, timeout=5.0)   # the mirror's status; its answer is dropped

The copy is the request as the primary destination gets it (method, path and query, header
fields after the route's edits, body) with what belongs to one connection made anew: the
mirror's own Host, a Content-Length for the body sent, `Connection: close`. No mitmproxy here:
`mirror.Mirror` (the addon) reads the request off the flow and hands it over as plain values.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

import certifi  # mitmproxy's own dependency, and its default trust store for upstream TLS

from ..core.model import Destination

# RFC 9110 §7.6.1: Connection and the fields it names, and these, which describe the
# connection rather than the message, are not forwarded. Transfer-Encoding (RFC 9112 §6.1) and
# Trailer go too: the copy carries its body with a Content-Length and sends no trailers.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"trailer",
        b"upgrade",
    }
)
# Set anew for the copy: Host (the mirror's authority) and Content-Length (the body sent).
# Expect: the body follows the head at once, without waiting for 100 Continue.
REPLACED = frozenset({b"host", b"content-length", b"expect"})
FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# No CR, LF or NUL in anything written to the head: they would split it.
_UNSAFE = re.compile(rb"[\r\n\x00]")
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ]
_STATUS_LINE = re.compile(rb"HTTP/\d\.\d ([1-5]\d\d)(?: [^\r\n]*)?\r?\n")
_DISCARD_CHUNK = 64 * 1024


class NotHttp(ValueError):
    """The mirror answered something other than an HTTP/1 status line."""


def mirror_path(path: str, primary_base: str, mirror: Destination) -> str:
    """The path the mirror gets: the primary's, with the primary's base path swapped for the
    mirror's (a mirror URL is read like a destination URL).

    `/v1/x?q=1` sent to `http://api/v1` → `/x?q=1` + `http://shadow/v2`'s base → `/v2/x?q=1`.
    """
    if primary_base and path.startswith(primary_base + "/"):  # as `upstream_path` made it
        path = path[len(primary_base) :]
    return mirror.upstream_path(path)


@dataclass(frozen=True, slots=True)
class MirrorCopy:
    destination: Destination
    head: bytes  # request line and header fields, up to and including the blank line
    body: bytes

    @classmethod
    def of(
        cls,
        destination: Destination,
        method: str,
        path: str,
        fields: Iterable[tuple[bytes, bytes]],
        body: bytes,
        *,
        http2: bool,
    ) -> MirrorCopy:
        """The copy of a request with these header fields (names and values as bytes).

        `http2`: the request came over HTTP/2 (or 3), where several Cookie fields may be
        sent; HTTP/1.1 allows one, so they are joined with "; " (RFC 9113 §8.2.3).
        Raises ValueError on a method, path or field that would split the head.
        """
        fields = list(fields)
        named = {name.lower() for name, _ in fields}
        dropped = HOP_BY_HOP | REPLACED
        for name, value in fields:
            if name.lower() == b"connection":  # and the fields it names (RFC 9110 §7.6.1)
                dropped |= {option.strip().lower() for option in value.split(b",")}
        kept = [(name, value) for name, value in fields if name.lower() not in dropped]
        if http2:
            kept = _one_cookie_field(kept)
        lines = [
            b"%s %s HTTP/1.1" % (method.encode("ascii"), path.encode("utf-8", "surrogateescape")),
            b"Host: " + destination.authority.encode("ascii"),
            *(name + b": " + value for name, value in kept),
        ]
        # A body, or framing in the original even for an empty one: say how long it is.
        if body or named & FRAMING:
            lines.append(b"Content-Length: %d" % len(body))
        lines.append(b"Connection: close")
        for line in lines:
            if _UNSAFE.search(line):
                raise ValueError(f"refusing to send a head line with CR, LF or NUL: {line[:80]!r}")
        return cls(destination, b"\r\n".join(lines) + b"\r\n\r\n", body)


def _one_cookie_field(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    cookies = [value for name, value in fields if name.lower() == b"cookie"]
    if len(cookies) < 2:
        return fields
    others = [(name, value) for name, value in fields if name.lower() != b"cookie"]
    return [*others, (b"cookie", b"; ".join(cookies))]


def status_of(line: bytes) -> int:
    """The status code of an HTTP/1 status line; NotHttp for anything else."""
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise NotHttp(f"not an HTTP/1 status line: {line[:80]!r}")
    return int(match.group(1))


def tls_context(*, insecure: bool, cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """Verify https mirrors as mitmproxy verifies destinations: with its `ssl_insecure`,
    `ssl_verify_upstream_trusted_ca` and `_confdir` options, else certifi's CA bundle."""
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        if cafile is None and capath is None:
            cafile = certifi.where()
        context = ssl.create_default_context(cafile=cafile, capath=capath)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def send(copy: MirrorCopy, *, tls: ssl.SSLContext | None, timeout: float) -> int:
    """Send the copy and return the status the mirror answered; the rest of its answer is read
    and dropped. Everything (connect, TLS, write, status line) within `timeout` seconds.

    Raises OSError, ssl.SSLError, TimeoutError, NotHttp or asyncio.IncompleteReadError.
    """
    destination = copy.destination
    deadline = asyncio.get_running_loop().time() + timeout
    async with asyncio.timeout_at(deadline):
        reader, writer = await asyncio.open_connection(
            destination.host,
            destination.port,
            ssl=tls if destination.scheme == "https" else None,
            server_hostname=destination.host if destination.scheme == "https" else None,
        )
    try:
        async with asyncio.timeout_at(deadline):
            writer.write(copy.head)
            writer.write(copy.body)
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(line, None)  # closed without an answer
            status = status_of(line)
        # Read to the end (the mirror closes: Connection: close) so that closing sends no RST
        # into an answer still being written; whatever the deadline leaves, never beyond it.
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout_at(deadline):
                while await reader.read(_DISCARD_CHUNK):
                    pass
        return status
    finally:
        writer.close()

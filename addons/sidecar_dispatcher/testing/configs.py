"""Dispatch configs as YAML text: the seed-shaped one for any destinations, or any other.

    path.write_text(dispatch_config("http://default.test:8081", dev="http://dev.test:8082/base"))

`dispatch_config` is the original README's example, grown: one source for the unit tests (fake
hosts), the integration tests (loopback servers and a closed port) and the benchmark (its nginx
ports); each chooses the destinations, the rules stay alike. `config_text` writes any other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

KEY = "environment"


@dataclass(frozen=True)
class Rewrite:
    """One rule, as the config's `rewrites` holds it: headers to set, in order, and where to."""

    patch: Sequence[tuple[str, str]] = ()  # (header name, value as written in YAML)
    destination: str | None = None  # None: the default destination


HOST = ("Host", "example.com")
DISPATCHED = ("dispatched", "true")  # a YAML boolean, as in the original example: sent as "true"
TOKEN = (("Authorization", "Bearer s3cret"), ("X-Twice", "first"), ("x-twice", "second"))


def dispatch_config(
    default: str,
    *,
    dev: str | None = None,
    qa: str | None = None,
    token: str | None = None,
    down: str | None = None,
) -> str:
    """The seed-shaped config; each argument is a destination URL. Requests go by `environment`:

    - no such header, or a value without a rule: to `default`, nothing patched
    - `dev`: Host: example.com and dispatched: true; to `dev` (without it, to the default)
    - `qa`: dispatched: true; to `qa` (without it, to the default)
    - `token`, only when given: Authorization: Bearer s3cret (a secret the INFO log must not
      show), then X-Twice twice in two spellings, so that the second replaces the first
    - `down`, only when given: dispatched: true; to `down`, meant to be a port nothing listens on
    """
    rewrites = {"dev": Rewrite((HOST, DISPATCHED), dev), "qa": Rewrite((DISPATCHED,), qa)}
    if token is not None:
        rewrites["token"] = Rewrite(TOKEN, token)
    if down is not None:
        rewrites["down"] = Rewrite((DISPATCHED,), down)
    return config_text(default, rewrites)


def config_text(default: str, rewrites: Mapping[str, Rewrite]) -> str:
    """A config with the key `environment`, the default destination and these rules, in order."""
    lines = [f"key: {KEY}", f"destination: {default}", "rewrites:"]
    for name, rewrite in rewrites.items():
        if not rewrite.patch and rewrite.destination is None:
            lines.append(f"  {name}: {{}}")
            continue
        lines.append(f"  {name}:")
        if rewrite.patch:
            lines.append("    patch:")
        for header, value in rewrite.patch:
            lines += [f"      - key: {header}", f"        val: {value}"]
        if rewrite.destination is not None:
            lines.append(f"    destination: {rewrite.destination}")
    return "\n".join(lines) + "\n"


def many_routes(count: int) -> str:
    """A `routes:` section of `count` routes of every matcher kind, to add to a config: none
    matches a request with `environment: qa` (or dev), so every route is tried before the
    rewrites. The benchmark's "100 routes" config."""
    routes = []
    kinds = (
        "headers: {{x-user-{n}: alice}}",
        "headers: {{environment: {{one_of: [qa-{n}, staging-{n}]}}}}",
        'headers: {{x-tenant: {{prefix: "eu-{n}-"}}}}',
        'headers: {{x-session: {{regex: "^[a-f0-9]{{8}}-{n}$"}}}}',
        "headers: {{x-debug-{n}: {{present: true}}}}",
        "path: {{prefix: /api/{n}/}}",
        "{{methods: [PUT], path: {{regex: '^/v{n}/'}}}}",
    )
    for number in range(count):
        match = kinds[number % len(kinds)].format(n=number)
        if not match.startswith("{"):
            match = "{" + match + "}"
        routes.append(
            f"  - {{name: r{number}, match: {match}, destination: http://127.0.0.1:8083}}"
        )
    return "routes:\n" + "\n".join(routes) + "\n"

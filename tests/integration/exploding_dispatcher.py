"""mitmproxy script for tests: the real Dispatcher, whose routing raises on `X-Test-Explode`.

It shows that an exception inside dispatch reaches the client as the sidecar's own 502,
inside a real mitmdump, instead of mitmproxy's default of carrying on to the reverse target.
"""

from __future__ import annotations

from typing import Any

import sidecar_dispatcher.proxy.router as router_module
from sidecar_dispatcher import Dispatcher
from sidecar_dispatcher.core.decision import Decision
from sidecar_dispatcher.core.model import RuleSet
from sidecar_dispatcher.core.resolve import HeaderLookup, resolve


def exploding_resolve(rule_set: RuleSet, headers: HeaderLookup, **kwargs: Any) -> Decision:
    if headers.get_all("X-Test-Explode"):
        raise RuntimeError("routing exploded on purpose")
    return resolve(rule_set, headers, **kwargs)


router_module.resolve = exploding_resolve  # type: ignore[attr-defined]
addons = [Dispatcher()]

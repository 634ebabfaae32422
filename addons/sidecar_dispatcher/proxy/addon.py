"""The dispatcher as one mitmproxy addon: the public entry that holds the parts doing the work.

    mitmdump --mode reverse:http://127.0.0.1:8081@5000 -s addons/dispatcher.py
    master.addons.add(Dispatcher())          # mitmweb, the runner, or a master built by hand

mitmproxy walks an addon's `addons` list for every hook (as it does for a script's), so each
part handles only its own hooks, in this order: `StartupPolicy` (logging, trust, other addons'
options), `LiveConfig` (the config file and the rules in force), `HeaderHygiene` (malformed
and hop-by-hop headers), `Router` (each request),
`UpstreamTimeouts` and `Mirror` (what a route asks beyond its destination), then what observes
finished requests and the sidecar's state: `RequestMetrics`, `AccessLog` and `AdminEndpoint`
(/metrics, /healthz, /readyz).
"""

from __future__ import annotations

from ..core.model import RuleSet
from ..observe.access_log import AccessLog
from ..observe.admin import Readiness
from ..observe.admin_endpoint import AdminEndpoint
from ..observe.request_metrics import RequestMetrics
from .header_hygiene import HeaderHygiene
from .live_config import LiveConfig
from .mirror import Mirror
from .request_limits import RequestLimits
from .router import Router
from .startup import StartupPolicy
from .timeouts import UpstreamTimeouts


class Dispatcher:
    """Send each request to the destination its key header selects, patching its headers."""

    def __init__(self) -> None:
        self.readiness = Readiness()
        self.metrics = RequestMetrics(self.readiness)
        self.config = LiveConfig(listeners=[self.metrics])
        self.router = Router(self.config)
        self.access_log = AccessLog()
        # Order matters: the log level is set before the config is read, and the rules are
        # in place before the router sees a request.
        self.addons = [
            StartupPolicy(),
            RequestLimits(),
            self.config,
            HeaderHygiene(),
            self.router,
            UpstreamTimeouts(),  # 504 when a destination sends no response headers in time
            Mirror(self.metrics),
            self.metrics,
            self.access_log,
            AdminEndpoint(self.metrics.metrics, self.readiness),
        ]

    @property
    def rules(self) -> RuleSet | None:
        """The rules in force; None until the config has been read."""
        return self.config.rules

"""Helpers for testing the dispatcher and what is built on it, shipped like `mitmproxy.test`.

    from sidecar_dispatcher.testing.configs import dispatch_config
    from sidecar_dispatcher.testing.loopback import free_port, send

`configs` writes the seed-shaped dispatch config for any destinations; `loopback` has what a
test or a benchmark needs around a server on 127.0.0.1: a free port, a wait until it accepts,
and a client that sends one request exactly as given. Neither imports mitmproxy.
"""

"""The mitmproxy addons that dispatch: the `Dispatcher` and the parts it holds.

    from sidecar_dispatcher import Dispatcher      # proxy/addon.py

addon.py composes them; startup.py settles options; live_config.py keeps the rules current;
header_hygiene.py and request_limits.py refuse what may not pass; router.py resolves each request
and applies the decision, which observe/flow_decision.py hands to timeouts.py, mirror.py and
the observers. Hooks stay thin: the work is in core/.
"""

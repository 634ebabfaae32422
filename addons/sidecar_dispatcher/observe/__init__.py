"""What the sidecar decided and what became of it: the decision per flow, logs, metrics, health.

    decision = decision_of(flow)     # flow_decision.py: the router's decision, for later addons
    outcome = Outcome.of(flow)       # outcome.py: the facts of a finished request

access_log.py writes one line per request; metrics.py names the metrics and request_metrics.py
counts into them; admin.py serves /metrics, /healthz and /readyz, and admin_endpoint.py binds
it as an addon.
"""

"""The pure core: the rule set, matching, `resolve`, the decision and header edits.

    decision = resolve(rules, headers, client_ip="10.0.0.7", path="/x", keep_host=False)

model.py holds the values a config becomes; matching.py the route conditions; resolve.py picks
the route or rule and computes the `Decision` (decision.py); header_edits.py is the one
implementation of its header edits. No I/O, no mitmproxy: the addons, `validate`, `explain`
and `diff` share it.
"""

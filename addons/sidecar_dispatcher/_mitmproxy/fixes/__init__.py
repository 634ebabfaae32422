"""Reaches into mitmproxy that correctness depends on: a failed check is fatal.

Upstream timeouts (overdue.py, overdue_checks.py, stale_retry.py), bounded request heads
(request_heads.py), chunked trailers (trailers.py), 1xx from a destination (informational.py),
plain error pages (error_pages.py), the lean master (lean_master.py) and flow files for `diff`
(flow_file.py). See the package's docstring for what happens when a check fails.
"""

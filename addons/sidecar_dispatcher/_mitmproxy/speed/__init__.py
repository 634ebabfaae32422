"""Reaches into mitmproxy that only make the lean runner faster: a failed check costs speed.

Hook dispatch (fast_hooks.py), header look-ups (header_lookups.py), flow ids (flow_ids.py) and
access lines in the terminal log's format (terminal_lines.py). mitmdump and mitmweb never use
them. See the package's docstring for what happens when a check fails.
"""

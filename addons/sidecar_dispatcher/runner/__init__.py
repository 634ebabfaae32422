"""`sidecar-dispatcher run`: the lean runner, its workers and how many to start.

    sidecar-dispatcher run [--workers N|auto]      # run_command.py

run_command.py checks the config and serves in this process (serve.py: a master with only the
addons a reverse proxy needs) or supervises workers (workers.py, without mitmproxy);
cpu_budget.py counts the CPUs `auto` may use.
"""

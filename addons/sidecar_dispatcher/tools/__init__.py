"""The command line: run, validate, explain a request, diff a config over recorded traffic.

    sidecar-dispatcher explain -H 'environment: dev' /x      # cli.py

descriptions.py puts a config and a decision into words; recorded.py reads flow and HAR files;
diff.py compares and groups what a config change would send elsewhere.
"""

"""The benchmark suite: the sidecar against its peers on loopback, and the runner's profile.

    .venv/bin/python bench/run.py [--quick]        the suite (bench/results/latest.{json,md})
    .venv/bin/python bench/run.py options          what mitmproxy's options cost in the runner
    .venv/bin/python bench/run.py profile          where the per-request CPU goes (py-spy)

See bench/README.md for the method.
"""

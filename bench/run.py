"""Run the benchmark: `.venv/bin/python bench/run.py [suite|options|profile] [--quick]`.

suite    (default) every peer, every workload, k6 and memory -> results/latest.{json,md}
         (--quick: a smoke of the same in well under a minute -> results/quick.{json,md})
options  what mitmproxy's options and our log level cost in the runner -> results/options.*
profile  py-spy profiles of mitmdump + addon and of the runner under wrk -> results/profile.*
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file: import the `bench` package, not its loose modules
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

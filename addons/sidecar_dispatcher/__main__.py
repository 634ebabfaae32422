"""`python -m sidecar_dispatcher` is the `sidecar-dispatcher` command."""

import sys

from .tools.cli import main

sys.exit(main())

"""`python -m sidecar_dispatcher` is the `sidecar-dispatcher` command."""

import sys

from .cli import main

sys.exit(main())

"""``python -m ptyhpc.bragg`` → :func:`ptyhpc.bragg.cli.bragg_main`."""

import sys

from .cli import bragg_main

sys.exit(bragg_main())

"""``python -m tfsmooth``: see :mod:`tfsmooth.cli`."""

import sys

from tfsmooth.cli import main

sys.exit(main())

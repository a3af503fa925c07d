"""``python -m doctor``: see :mod:`doctor.cli`."""

import sys

from doctor.cli import main

sys.exit(main())

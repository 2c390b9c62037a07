"""python -m kscand."""

import sys

from kscand.cli import main

sys.exit(main())

"""``python -m agent`` is ``caisey-agent``."""

import sys

from agent.cli import main

sys.exit(main())

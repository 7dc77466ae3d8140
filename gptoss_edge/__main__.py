"""`python -m gptoss_edge` = the `gptoss-edge` command."""
import sys

from gptoss_edge.cli import main

sys.exit(main())

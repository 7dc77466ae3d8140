"""`python -m gptoss_edge.cli` = the `gptoss-edge` command."""
import sys

from gptoss_edge.cli import main

sys.exit(main())

"""``python -m bgprompt_training.cli VERB ...``: the ``bgprompt`` CLI."""
import sys

from . import main

sys.exit(main())

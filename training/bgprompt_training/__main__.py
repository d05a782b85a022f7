"""``python -m bgprompt_training VERB ...``: the ``bgprompt`` CLI, in a form torchrun launches
(``torchrun --nproc_per_node N -m bgprompt_training train ...``)."""
import sys

from .cli import main

sys.exit(main())

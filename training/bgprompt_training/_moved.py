"""Old module paths of bgprompt_training (``bgprompt_training.grasp_eval``...) that moved.

Importing an old path still works: it imports the new module, warns with a ``DeprecationWarning`` naming it, and
binds the old name to the same module object (as bgprompt_core/_moved.py does for the core).
"""
from __future__ import annotations

from bgprompt_core._moved import MovedModules, install_finder

MOVED = {"grasp_eval": "grasp"}
"""Old module name (under bgprompt_training) -> its new home."""


def install() -> None:
    """The finder for bgprompt_training's old paths, once (bgprompt_core's MovedModules)."""
    install_finder(MovedModules("bgprompt_training", MOVED))

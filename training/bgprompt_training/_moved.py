"""Old module paths of bgprompt_training (``bgprompt_training.grasp_eval``...) that moved.

Importing an old path still works: it imports the new module, warns with a ``DeprecationWarning`` naming it, and
binds the old name to the same module object (as bgprompt_core/_moved.py does for the core).
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {"grasp_eval": "grasp"}
"""Old module name (under bgprompt_training) -> its new home."""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        pkg, _, leaf = fullname.rpartition(".")
        if pkg != "bgprompt_training" or leaf not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = "bgprompt_training." + MOVED[spec.name.rpartition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}; import that instead", DeprecationWarning, stacklevel=3)
        module = importlib.import_module(new)
        self._own_spec = module.__spec__  # importlib sets __spec__ to the old name's; put it back
        return module

    def exec_module(self, module):
        module.__spec__ = self._own_spec


def install() -> None:
    """Put the finder for the old paths on ``sys.meta_path`` once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())  # before an editable install's finder, which may map the old file

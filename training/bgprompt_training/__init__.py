"""bgprompt_training: the offline side of bgprompt (data, training, evaluation, export) and the CLI.

Old module paths that moved still import, with a DeprecationWarning naming the new one (_moved.py)."""
from ._moved import install as _install_moved_paths

_install_moved_paths()

"""Every error bgprompt_core raises on purpose (bad input, configuration, files, environment), in one place.

``bgprompt`` prints such an error's message and exits 2; any other exception is a bug and keeps its traceback.
Each concrete error also derives from the builtin it refines (ValueError, RuntimeError), so callers that catch
those keep working. The modules that raised them first still hand them out under the same names
(``from bgprompt_core.frame.masks import InputError`` works); this module imports nothing, so raising an error never
imports torch.
"""
from __future__ import annotations


class BgpromptError(Exception):
    """An error whose message tells the user what to do."""


class Unavailable(BgpromptError, RuntimeError):
    """Something this machine lacks (an OpenGL context, a GPU, a package); the message names the alternative."""


class ConfigError(BgpromptError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputError(BgpromptError, ValueError):
    """A frame that cannot be processed (wrong encoding, sizes, empty mask, bad intrinsics...)."""


class ConversionError(BgpromptError, ValueError):
    """A message that cannot be decoded as claimed; the message says what is wrong."""


class ModelLoadError(BgpromptError, RuntimeError):
    """A depth network could not be found or loaded; the message says what to do."""


class StaleGraphError(ModelLoadError):
    """A shipped graph that does not match the shipped weights (or is missing, truncated, an LFS pointer)."""


class GraphError(BgpromptError, ValueError):
    """An exported graph that cannot be used as given; the message says what to do."""


class TensorRTError(BgpromptError, RuntimeError):
    """A TensorRT engine could not be built or run; the message says what to do."""


class CheckpointError(BgpromptError, RuntimeError):
    """A checkpoint is missing, corrupt, of an unknown format, or incompatible; the message says why."""

"""The base of every error bgprompt raises on purpose (bad input, configuration, files, environment).

``bgprompt`` prints such an error's message and exits 2; any other exception is a bug and keeps its traceback.
Each concrete error also derives from the builtin it refines (ValueError, RuntimeError), so callers that catch
those keep working.
"""
from __future__ import annotations


class BgpromptError(Exception):
    """An error whose message tells the user what to do."""


class Unavailable(BgpromptError, RuntimeError):
    """Something this machine lacks (an OpenGL context, a GPU, a package); the message names the alternative."""

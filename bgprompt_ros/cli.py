"""The `bgprompt bag ...` verbs' entry point (``bgprompt.verbs``: ``bag = bgprompt_ros.cli:register``, setup.py).

The verbs themselves live in bgprompt_ros.bags.cli; this module stays so that the entry point keeps its name.
"""
from __future__ import annotations

from .bags.cli import register

__all__ = ["register"]

"""Evaluation: the paper's protocol, grasp-cloud metrics, simulated RGB-D cameras, colour maps."""


def __getattr__(name: str):
    """Names of the old flat module ``bgprompt_core.evaluation`` (deprecated: import from its new home)."""
    from .._moved import old_name_getattr

    return old_name_getattr(__name__, name)

"""The object-depth node's ROS parameters: declared from params.PARAMETERS, validated when set, read as configured.

``NodeParameters`` is mixed into ObjectDepthNode (node.py). A parameter that needs cleanup + configure (a reload
parameter) keeps its configured value running; a change to it is pending until then (``pending``, /diagnostics).
"""
from __future__ import annotations

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult

from bgprompt_core.frame.estimator import EstimatorConfig

from .params import PARAMETERS, TYPE_WORDS, coerce, estimator_config_from_params, invalid


class NodeParameters:
    """The parameter half of ObjectDepthNode: ``p`` (current), ``c`` (configured), ``pending``."""

    def _declare_parameters(self) -> None:
        """Every parameter of params.PARAMETERS, described, dynamically typed; changes checked by params.invalid."""
        for name, (default, desc, allowed, reload) in PARAMETERS.items():
            text = (f"{desc} ({TYPE_WORDS[type(default)]})" + (f"; one of {list(allowed)}" if allowed else "")
                    + ("; needs cleanup+configure" if reload else ""))
            # dynamically typed: `max_depth: 2` is 2.0, and a wrong type (`device: 0`) fails configure with the
            # reason (params.invalid) instead of raising InvalidParameterTypeException here
            self.declare_parameter(name, default, ParameterDescriptor(name=name, dynamic_typing=True, description=text))
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def p(self, name: str):
        """The parameter's current value (a whole number for a decimal parameter as a float)."""
        return coerce(name, self.get_parameter(name).value)

    def c(self, name: str):
        """The value configure applied (the current one before the first configure): what runs."""
        return self.configured[name] if name in self.configured else self.p(name)

    def pending(self) -> dict:
        """Parameters changed since configure that apply only after cleanup + configure."""
        return {n: self.p(n) for n, v in self.configured.items() if PARAMETERS[n][3] and self.p(n) != v}

    def _on_set_parameters(self, params) -> SetParametersResult:
        for prm in params:
            reason = invalid(prm.name, prm.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            if prm.name in PARAMETERS and PARAMETERS[prm.name][3] and self.estimator is not None:
                self._log_throttled("warning", f"parameter {prm.name} changed to {prm.value!r}: pending, it applies "
                                    f"after cleanup + configure (running: {self.c(prm.name)!r})", period=0.0)
        return SetParametersResult(successful=True)

    def estimator_config(self) -> EstimatorConfig:
        """The estimator's configuration from the current values. max_depth is not a reload parameter: it takes
        effect at once, so the estimator gets none and the node applies its current value to every result."""
        return estimator_config_from_params({**{name: self.p(name) for name in PARAMETERS}, "max_depth": 0.0})

"""Constant folding of a frozen network before export: BiT's weight standardization becomes plain conv weights.

BiT (the backbone of DPT-hybrid and of the shipped ``mini``) standardizes every conv weight on each forward,
W' = (W - mean(W)) / sqrt(var(W) + eps) per output channel, written as ``F.batch_norm(W, training=True)``. Exported,
that is a training-mode ``BatchNormalization`` with three outputs, which TensorRT 8.6 refuses
(``training_mode == 1``) and 10.x refuses too (a node with more outputs than its importer returns), and which
onnxruntime's CUDA provider refuses at opset >= 14. The network is frozen, so W' is a constant: computed once
here, exactly as the module computes it, it makes the exported conv an ordinary one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StandardizedConv2d(nn.Conv2d):
    """A ``WeightStandardizedConv2d`` with its standardized weight precomputed (same padding, same output)."""

    def __init__(self, ws: nn.Conv2d):
        super().__init__(ws.in_channels, ws.out_channels, ws.kernel_size, stride=ws.stride, padding=ws.padding,
                         dilation=ws.dilation, groups=ws.groups, bias=ws.bias is not None,
                         device=ws.weight.device, dtype=ws.weight.dtype)
        self.pad = ws.pad
        with torch.no_grad():
            self.weight.copy_(standardized_weight(ws))
            if ws.bias is not None:
                self.bias.copy_(ws.bias)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        return super().forward(x)


def standardized_weight(ws: nn.Conv2d) -> torch.Tensor:
    """W' of BiT's ``WeightStandardizedConv2d.forward``, computed by the same call (bit-identical)."""
    with torch.no_grad():
        return F.batch_norm(ws.weight.reshape(1, ws.out_channels, -1), None, None, training=True, momentum=0.0,
                            eps=ws.eps).reshape_as(ws.weight)


def _is_weight_standardized(module: nn.Module) -> bool:
    try:
        from transformers.models.bit.modeling_bit import WeightStandardizedConv2d
    except ImportError:  # transformers without BiT: nothing of that kind can be in the network
        return False
    return isinstance(module, WeightStandardizedConv2d)


def fold_weight_standardization(model: nn.Module) -> int:
    """Replace, in place, every BiT ``WeightStandardizedConv2d`` of a frozen ``model``; returns how many."""
    targets = [(name, m) for name, m in model.named_modules() if _is_weight_standardized(m)]
    for name, module in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, StandardizedConv2d(module))
    return len(targets)

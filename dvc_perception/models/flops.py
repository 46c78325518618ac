# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Count the floating-point operations of a network's convolutions (the budget that matters)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def count_conv_flops(model: nn.Module, example: Tensor) -> int:
    """FLOPs of every Conv2d and Linear layer for one forward pass of one frame.

    A multiply-accumulate counts as 2 FLOPs; element-wise ops, norms and activations are
    ignored (they are fused into the convolutions by TensorRT and are a few percent on CPU).

    Args:
        model: the network (its mode is restored afterwards).
        example: (1, ...) an input of the size the network runs at.

    Returns:
        FLOPs per frame.
    """
    total = [0]

    def conv_hook(module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = (module.in_channels // module.groups) * kh * kw
        else:
            per_output = module.in_features  # nn.Linear
        total[0] += 2 * per_output * output.numel() // int(output.shape[0])

    handles = [
        m.register_forward_hook(conv_hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0]

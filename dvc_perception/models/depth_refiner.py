# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The learned depth refiner's network (`motion_depth.learned_refiner` has its input contract).

`build_net()` -> `DepthRefinerNet`: (B, 4, H, W) inputs (`classical_inputs`) -> per-iteration
normalised log depth and a confidence; a shared ConvGRU at 1/4 resolution, convex upsampling.
"""

from __future__ import annotations

from typing import Any


def build_net(hidden: int = 16, context: int = 16, iterations: int = 4) -> Any:
    """A `DepthRefinerNet` (torch is imported when it is built)."""
    return _net_class()(hidden=hidden, context=context, iterations=iterations)


def _net_class() -> Any:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvGRU(nn.Module):
        """3x3 convolutional GRU cell."""

        def __init__(self, hidden: int, inp: int) -> None:
            super().__init__()
            self.zr = nn.Conv2d(hidden + inp, 2 * hidden, 3, padding=1)
            self.q = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

        def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            z, r = torch.sigmoid(self.zr(torch.cat([h, x], 1))).chunk(2, 1)
            q = torch.tanh(self.q(torch.cat([r * h, x], 1)))
            return (1 - z) * h + z * q

    class DepthRefinerNet(nn.Module):
        """(B, 4, H, W) inputs (`classical_inputs`) -> per-iteration normalised log depth.

        H and W multiples of 4. `forward` returns (log depth (B, iterations, H, W), confidence
        (B, 1, H, W) in [0, 1]); `export_forward` (the ONNX graph) only the last iteration's
        log depth (B, 1, H, W) and the confidence. A small full-resolution head corrects the
        last iteration's depth and gives the confidence. The increment heads start at zero, so an
        untrained net returns its input's depth where that is known (0, the median, elsewhere).
        """

        def __init__(self, hidden: int = 16, context: int = 16, iterations: int = 4) -> None:
            super().__init__()
            self.iterations = iterations
            self.hidden = hidden
            self.enc = nn.Sequential(
                nn.Conv2d(4, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
            )
            self.to_hidden = nn.Conv2d(32, hidden, 3, padding=1)
            self.to_context = nn.Conv2d(32, context, 3, padding=1)
            self.motion = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.gru = ConvGRU(hidden, context + 8)
            self.delta = nn.Sequential(nn.Conv2d(hidden, 16, 3, padding=1), nn.ReLU(),
                                       nn.Conv2d(16, 1, 3, padding=1))
            self.up_mask = nn.Sequential(nn.Conv2d(hidden, 32, 3, padding=1), nn.ReLU(),
                                         nn.Conv2d(32, 9 * 16, 1))
            self.fine = nn.Sequential(nn.Conv2d(5, 12, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(12, 2, 3, padding=1))
            for head in (self.delta[-1], self.fine[-1]):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)

        @staticmethod
        def _upsample(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            """Convex 4x upsampling of (B, 1, h, w) with (B, 144, h, w) weight logits."""
            B, _, h, w = d.shape
            p = F.pad(d, (1, 1, 1, 1), mode="replicate")
            nb = torch.cat([p[:, :, i:i + h, j:j + w] for i in range(3) for j in range(3)], 1)
            m = torch.softmax(mask.view(B, 9, 16, h, w), dim=1)
            up = (m * nb.unsqueeze(2)).sum(1)  # (B, 16, h, w)
            up = up.view(B, 4, 4, h, w).permute(0, 3, 1, 4, 2)
            return up.reshape(B, 1, 4 * h, 4 * w)

        def forward(self, x: torch.Tensor, every_iteration: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            rel, known = x[:, 1:2], x[:, 2:3]
            f = self.enc(x)
            h = torch.tanh(self.to_hidden(f))
            ctx = torch.relu(self.to_context(f))
            k4 = F.avg_pool2d(known, 4)
            d0 = F.avg_pool2d(rel * known, 4) / k4.clamp(min=1e-3)  # mean of the known pixels
            d = d0
            outs = []
            for k in range(self.iterations):
                mf = self.motion(torch.cat([d, d0, k4], 1))
                h = self.gru(h, torch.cat([ctx, mf], 1))
                d = d + self.delta(h)
                if every_iteration or k == self.iterations - 1:
                    mask = self.up_mask(h)
                    # known pixels keep their own detail: the coarse update is added to them
                    up, d0_up = self._upsample(d, mask), self._upsample(d0, mask)
                    outs.append(known * (rel + up - d0_up) + (1 - known) * up)
            fine = self.fine(torch.cat([outs[-1], x], 1))
            outs[-1] = outs[-1] + fine[:, :1]
            confidence = torch.sigmoid(fine[:, 1:2] + 2.0 * known - 1.0)
            return torch.cat(outs, 1), confidence

        def export_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.forward(x, every_iteration=False)

    return DepthRefinerNet

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import pytest
import torch

from dvc_perception.errors import ShapeError
from dvc_perception.models.heads import heatmap_cell_centres, pool_confidence, soft_argmax_2d


def _gaussian_logits(h: int, w: int, stride: int, centres_px: torch.Tensor, sigma_px: float):
    """log of a Gaussian sampled at the cell centres (softmax of it is the normalised Gaussian)."""
    us = heatmap_cell_centres(w, stride, dtype=torch.float64)
    vs = heatmap_cell_centres(h, stride, dtype=torch.float64)
    du = us.view(1, 1, w) - centres_px[:, 0].view(-1, 1, 1)
    dv = vs.view(1, h, 1) - centres_px[:, 1].view(-1, 1, 1)
    return (-(du**2 + dv**2) / (2 * sigma_px**2)).unsqueeze(0)  # (1, C, h, w)


def test_cell_centres_follow_pixel_centre_convention():
    # a stride-4 cell j covers input pixels 4j .. 4j+3, whose mean centre is 4j + 1.5
    c = heatmap_cell_centres(5, 4, dtype=torch.float64)
    ref = torch.tensor([[4 * j + k for k in range(4)] for j in range(5)], dtype=torch.float64)
    torch.testing.assert_close(c, ref.mean(dim=1))


def test_soft_argmax_recovers_subpixel_gaussian_peak():
    gen = torch.Generator().manual_seed(0)
    h, w, stride = 60, 80, 4
    centres = torch.stack(
        [torch.rand(16, generator=gen, dtype=torch.float64) * 200 + 60,
         torch.rand(16, generator=gen, dtype=torch.float64) * 120 + 60], dim=-1)
    logits = _gaussian_logits(h, w, stride, centres, sigma_px=6.0)
    xy, prob = soft_argmax_2d(logits, stride)
    assert xy.shape == (1, 16, 2)
    assert (xy[0] - centres).abs().max() < 0.05
    torch.testing.assert_close(prob.sum(-1), torch.ones(1, 16, dtype=torch.float64))


def test_soft_argmax_of_a_sharp_peak_is_the_cell_centre():
    logits = torch.full((1, 1, 6, 8), -1e4, dtype=torch.float64)
    logits[0, 0, 2, 5] = 0.0
    xy, _ = soft_argmax_2d(logits, 4)
    torch.testing.assert_close(xy[0, 0], torch.tensor([4 * 5 + 1.5, 4 * 2 + 1.5],
                                                      dtype=torch.float64))


def test_soft_argmax_and_confidence_gradcheck():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    conf = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax_2d(x, 4)[0], (logits,))
    assert torch.autograd.gradcheck(
        lambda x, c: pool_confidence(c, soft_argmax_2d(x, 4)[1]), (logits, conf))


def test_soft_argmax_rejects_bad_shapes():
    with pytest.raises(ShapeError, match="logits"):
        soft_argmax_2d(torch.zeros(2, 3, 4), 4)
    with pytest.raises(ShapeError, match="prob"):
        pool_confidence(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 11))


def test_windowed_soft_argmax_ignores_far_background_mass():
    # a Gaussian peak plus a uniform floor: the global soft-argmax is pulled towards the map
    # centre by the floor, the local one (7x7 cells around the peak) is not
    h, w, stride = 60, 80, 4
    centre = torch.tensor([[30.0, 40.0]], dtype=torch.float64)
    peak = _gaussian_logits(h, w, stride, centre, sigma_px=4.0)
    logits = torch.logaddexp(peak, torch.full_like(peak, peak.max().item() - 6.0))
    xy_global, _ = soft_argmax_2d(logits, stride)
    xy_local, prob = soft_argmax_2d(logits, stride, window=7)
    assert (xy_global[0, 0] - centre[0]).norm() > 5.0
    assert (xy_local[0, 0] - centre[0]).norm() < 0.5
    assert int((prob[0, 0] > 1e-12).sum()) == 7 * 7
    torch.testing.assert_close(prob.sum(-1), torch.ones(1, 1, dtype=torch.float64))


def test_windowed_soft_argmax_gradcheck_and_bad_window():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 9, 11, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax_2d(x, 4, window=3)[0], (logits,))
    with pytest.raises(ShapeError, match="window"):
        soft_argmax_2d(logits, 4, window=4)


def test_windowed_soft_argmax_matches_a_per_cell_reference():
    # reference: a Python loop over the cells, keeping those within the window's Chebyshev
    # distance of the arg-max cell (ties and map borders included: logits on a coarse grid)
    gen = torch.Generator().manual_seed(3)
    logits = torch.randint(0, 6, (2, 3, 9, 12), generator=gen).double()
    stride, window = 4, 5
    xy, prob = soft_argmax_2d(logits, stride, window=window)
    us = heatmap_cell_centres(12, stride, dtype=torch.float64)
    vs = heatmap_cell_centres(9, stride, dtype=torch.float64)
    for b in range(2):
        for c in range(3):
            k = int(logits[b, c].flatten().argmax())
            pi, pj = divmod(k, 12)
            cells = [(i, j) for i in range(9) for j in range(12)
                     if max(abs(i - pi), abs(j - pj)) <= window // 2]
            wts = torch.stack([logits[b, c, i, j] for i, j in cells]).softmax(0)
            ref = sum(wt * torch.stack([us[j], vs[i]]) for wt, (i, j) in zip(wts, cells))
            torch.testing.assert_close(xy[b, c], ref)
            assert int((prob[b, c] > 1e-12).sum()) == len(cells)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvc_perception.geometry.projection import project_points
from dvc_perception.models.heads import soft_argmax_2d
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig
from dvc_perception.train.config import PoseLossConfig
from dvc_perception.train.datasets import ListFrameSource, PoseDataset
from dvc_perception.train.loop import _collate
from dvc_perception.train.losses import (
    depth_l1_loss,
    gaussian_heatmap_target,
    heatmap_loss,
    keypoint_loss,
    pose_reprojection_loss,
    silog_loss,
)
from dvc_perception.train.tasks import PoseTask
from dvc_perception.train.toy import toy_frames, toy_object


def test_gaussian_target_is_normalised_and_centred():
    kp = torch.tensor([[37.3, 21.8], [50.0, 40.25]], dtype=torch.float64)
    target = gaussian_heatmap_target(kp, 16, 20, 4, sigma_cells=1.5)
    torch.testing.assert_close(target.sum(-1), torch.ones(2, dtype=torch.float64))
    xy, _ = soft_argmax_2d(torch.log(target).reshape(1, 2, 16, 20), 4)
    assert (xy[0] - kp).abs().max() < 0.05


def test_heatmap_loss_is_zero_at_the_target_and_positive_elsewhere():
    kp = torch.tensor([[[[37.3, 21.8]]]], dtype=torch.float64)
    valid = torch.ones(1, 1, 1, dtype=torch.bool)
    target = gaussian_heatmap_target(kp.reshape(1, 2), 16, 20, 4, 1.0)
    at_target = torch.log(target).reshape(1, 1, 1, 16, 20)
    assert float(heatmap_loss(at_target, kp, valid, 4, 1.0)) < 1e-9
    assert float(heatmap_loss(torch.zeros_like(at_target), kp, valid, 4, 1.0)) > 1.0
    assert float(heatmap_loss(at_target, kp, ~valid, 4, 1.0)) == 0.0


def test_keypoint_loss_is_mean_l1_over_valid():
    pred = torch.tensor([[[[1.0, 2.0], [5.0, 5.0]]]])
    gt = torch.tensor([[[[2.0, 0.0], [0.0, 0.0]]]])
    valid = torch.tensor([[[True, False]]])
    assert float(keypoint_loss(pred, gt, valid)) == pytest.approx(3.0)


def test_silog_scale_invariance_and_log_rmse_limit():
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 8, generator=gen, dtype=torch.float64) + 0.5
    pred = target * torch.exp(0.1 * torch.randn(2, 1, 8, 8, generator=gen, dtype=torch.float64))
    valid = torch.ones_like(target, dtype=torch.bool)
    # lambda = 1: a global scale does not change the loss
    torch.testing.assert_close(silog_loss(3.0 * pred, target, valid, 1.0),
                               silog_loss(pred, target, valid, 1.0))
    # lambda = 0: the plain log RMSE per image, averaged
    d = (pred.log() - target.log()).reshape(2, -1)
    ref = d.pow(2).mean(-1).sqrt().mean()
    torch.testing.assert_close(silog_loss(pred, target, valid, 0.0), ref)


def test_silog_ignores_invalid_pixels_and_empty_images():
    gen = torch.Generator().manual_seed(1)
    target = torch.rand(3, 1, 6, 7, generator=gen, dtype=torch.float64) + 0.5
    pred = target * torch.exp(0.2 * torch.randn(3, 1, 6, 7, generator=gen, dtype=torch.float64))
    valid = torch.rand(3, 1, 6, 7, generator=gen) > 0.4
    valid[2] = False  # an image without ground truth does not count
    target = torch.where(valid, target, torch.full_like(target, float("nan")))
    ref = []
    for i in range(2):  # the variance form, image by image, on the valid pixels only
        d = pred[i][valid[i]].log() - target[i][valid[i]].log()
        ref.append(((d**2).mean() - 0.85 * d.mean() ** 2).sqrt())
    loss = silog_loss(pred.requires_grad_(), target, valid, 0.85)
    torch.testing.assert_close(loss, torch.stack(ref).mean())
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all()


def test_depth_l1_is_mean_abs_error_over_valid_pixels_with_zero_gradient_elsewhere():
    gen = torch.Generator().manual_seed(2)
    target = torch.rand(2, 1, 5, 6, generator=gen, dtype=torch.float64) + 0.5
    pred = target + 0.1 * torch.randn(2, 1, 5, 6, generator=gen, dtype=torch.float64)
    valid = torch.rand(2, 1, 5, 6, generator=gen) > 0.3
    target = torch.where(valid, target, torch.full_like(target, float("nan")))
    loss = depth_l1_loss(pred.requires_grad_(), target, valid)
    torch.testing.assert_close(loss, (pred[valid] - target[valid]).abs().mean())
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~valid] == 0).all()
    expected = torch.sign(pred - target).detach()[valid] / int(valid.sum())
    torch.testing.assert_close(pred.grad[valid], expected)
    assert float(depth_l1_loss(pred, target, torch.zeros_like(valid))) == 0.0


def _pose_problem(noise_px: float, seed: int):
    obj = toy_object()
    gen = torch.Generator().manual_seed(seed)
    kp3d = torch.as_tensor(obj.keypoints_obj).unsqueeze(0).repeat(2, 1, 1)
    R = torch.eye(3, dtype=torch.float64).repeat(2, 1, 1)
    R[1] = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    t = torch.tensor([[0.02, -0.01, 0.5], [-0.03, 0.02, 0.6]], dtype=torch.float64)
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]],
                     dtype=torch.float64).repeat(2, 1, 1)
    x2d = project_points(kp3d, R, t, K)
    x2d = x2d + noise_px * torch.randn(x2d.shape, generator=gen, dtype=torch.float64)
    return x2d, torch.ones(2, kp3d.shape[1], dtype=torch.float64), kp3d, K, R, t


def test_pose_loss_is_zero_for_exact_keypoints():
    x2d, w, kp3d, K, R, t = _pose_problem(0.0, 0)
    loss, ok = pose_reprojection_loss(x2d, w, kp3d, K, R, t)
    assert ok.all()
    assert float(loss) < 1e-6


def test_pose_loss_gradient_matches_finite_differences():
    x2d, w, kp3d, K, R, t = _pose_problem(1.0, 1)  # non-zero residual on purpose
    x2d = x2d.clone().requires_grad_()
    loss, ok = pose_reprojection_loss(x2d, w, kp3d, K, R, t)
    assert ok.all()
    (grad,) = torch.autograd.grad(loss, x2d)
    eps = 1e-5
    fd = torch.zeros_like(x2d)
    for idx in [(0, 0, 0), (0, 3, 1), (1, 5, 0), (1, 8, 1)]:
        xp, xm = x2d.detach().clone(), x2d.detach().clone()
        xp[idx] += eps
        xm[idx] -= eps
        lp, _ = pose_reprojection_loss(xp, w, kp3d, K, R, t)
        lm, _ = pose_reprojection_loss(xm, w, kp3d, K, R, t)
        fd[idx] = (lp - lm) / (2 * eps)
        assert abs(float(grad[idx] - fd[idx])) < 1e-5 * max(1.0, abs(float(fd[idx])))
    assert float(grad.abs().max()) > 1e-3


def test_pose_loss_gradient_reaches_network_parameters():
    torch.manual_seed(0)
    obj = toy_object()
    net = KeypointNet(KeypointNetConfig(object_ids=(obj.object_id,), num_keypoints=9,
                                        input_width=128, input_height=96))
    # non-zero heatmap head so the soft-argmax is not exactly uniform at initialisation
    torch.nn.init.normal_(net.heatmap_head.weight, std=0.5)
    ds = PoseDataset(ListFrameSource(toy_frames(4, seed=3)), [obj], 128, 96)
    batch = _collate([ds[i] for i in range(4)])
    task = PoseTask([obj], PoseLossConfig())
    out = net(batch["image"])
    loss, frac_ok = task.pose_loss(out.x2d, out.weights, batch)
    assert frac_ok > 0.0
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    for name in ("encoder.stages.0.0.0.weight", "heatmap_head.weight", "up4.fuse.0.weight"):
        g = grads[name]
        assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) > 0, name
    # the pose loss sees the keypoints only (weights are detached): no gradient to confidences
    assert grads["confidence_head.weight"] is None or float(
        grads["confidence_head.weight"].abs().sum()) == 0.0
    assert np.isfinite(frac_ok)


def test_guarded_solve_skips_collapsed_keypoints_and_matches_solve_pnp():
    from dvc_perception.geometry.pnp import solve_pnp
    from dvc_perception.train.losses import solve_pnp_guarded

    x2d, w, kp3d, K, R, t = _pose_problem(0.5, 2)
    collapsed = x2d.clone()
    collapsed[1] = x2d[1].mean(dim=0, keepdim=True) + 0.01 * torch.arange(9.0).unsqueeze(-1)
    R_g, t_g, ok = solve_pnp_guarded(collapsed, kp3d, K, w)
    assert ok.tolist() == [True, False]
    ref = solve_pnp(x2d[:1], kp3d[:1], K[:1], w[:1])
    torch.testing.assert_close(R_g[:1], ref.R)
    torch.testing.assert_close(t_g[:1], ref.t)
    torch.testing.assert_close(t_g[1], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Where the demo-object models fall short of the issue-4 floors (synthetic validation split).

pose: ADD@0.1d by keypoint visibility (occlusion), the sign of the depth error of the misses,
whether the predicted keypoint constellation is shrunk (scale, radial residuals, and ADD with the
translations scaled as a probe), the same model on training frames (generalisation gap), and
test-time averaging over 2 px input shifts (how much of the error depends on the stride-4 grid
phase).
depth: the per-frame scale error (median of truth / prediction), and what aligning each frame's
scale to the detected object's rendered depth (pose model + mesh) would give.

    .venv/bin/python benchmarks/diagnose_demo_models.py pose [--pose runs/pose_demo/best.pt]
    .venv/bin/python benchmarks/diagnose_demo_models.py depth [--depth runs/depth_demo/best.pt]

Needs the recipe's data (data/demo_a, data/demo_val) and checkpoints (tools/train_demo_models.sh).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

from dvc_perception.geometry.metrics import add_error
from dvc_perception.models.depth_net import depth_from_canonical
from dvc_perception.train.checkpoints import load_checkpoint
from dvc_perception.train.config import PoseLossConfig
from dvc_perception.train.datasets import (
    DepthDataset,
    PoseDataset,
    SubsetFrameSource,
    load_object_infos,
)
from dvc_perception.train.loop import _make_loader
from dvc_perception.train.runner import RunSpec, build_depth_net, build_keypoint_net
from dvc_perception.train.runner import open_frame_source as _open
from dvc_perception.train.tasks import PoseTask, solve_pose_like_pipeline

SHIFTS = ((0, 0), (2, 0), (0, 2), (2, 2))  # px at the 320x240 input: half a heatmap cell
T_SCALES = (0.99, 0.9925, 0.995, 0.9975)  # translations scaled by these (a depth-bias probe)
RADIUS_BINS_PX = (0, 10, 20, 30, 45, 80)


def _constellation(x2d: torch.Tensor, gt: torch.Tensor, visible: torch.Tensor):
    """Scale of the predicted visible keypoints about the true ones' centroid (least squares)
    and each visible keypoint's (distance from that centroid px, radial residual px)."""
    c = gt[visible].mean(0)
    a, b = gt[visible] - c, x2d[visible] - c
    r = a.norm(dim=-1)
    radial = ((b - a) * a).sum(-1) / r.clamp_min(1e-6)
    return float((a * b).sum() / (a * a).sum()), r.tolist(), radial.tolist()


def _scaled_add(R, t, Rg, tg, pts, scale: float) -> float:
    """ADD [m] of the pose (R, scale * t) against the ground truth (Rg, tg)."""
    return float(add_error(R[None], scale * t[None], Rg[None], tg[None], pts)[0])


def _pose_rows(net, task, obj, source, shifts=((0, 0),)) -> list[dict[str, float]]:
    """One row per present instance: ADD [m], success, dz [m], z [m], visible fraction, the
    constellation scale and radial residuals (`_constellation`, instances with >= 6 visible
    keypoints, else NaN), and success with the translation scaled by each of `T_SCALES`."""
    rows = []
    pts = torch.as_tensor(obj.points_obj, dtype=torch.float64)
    data = PoseDataset(source, [obj], 320, 240)
    with torch.no_grad():
        for batch in _make_loader(data, 16, sampler=None, num_workers=0, drop_last=False):
            present = batch["present"][:, 0]
            if not bool(present.any()):
                continue
            xs, ws = [], []
            for dx, dy in shifts:  # shift the image right/down, shift the keypoints back
                img = F.pad(batch["image"], (dx, 0, dy, 0))[..., :240, :320]
                out = net(img)
                xs.append(out.x2d[:, 0] - torch.tensor([dx, dy], dtype=out.x2d.dtype))
                ws.append(out.weights[:, 0])
            x2d = torch.stack(xs).mean(0)[present].double()
            w = torch.stack(ws).mean(0)[present].double()
            n = int(present.sum())
            kp3d = task.keypoints_obj[0].unsqueeze(0).expand(n, -1, -1)
            R, t, ok = solve_pose_like_pipeline(x2d, kp3d, batch["K"][present].double(), w,
                                                PoseTask.ransac_threshold_px)
            Rg, tg = batch["R"][present, 0].double(), batch["t"][present, 0].double()
            visible = batch["kp_visible"][present, 0].bool()
            vis = visible.double().mean(-1)
            gt2d = batch["keypoints"][present, 0].double()
            for i in range(n):
                adds = [_scaled_add(R[i], t[i], Rg[i], tg[i], pts, c) if ok[i] else np.inf
                        for c in (1.0, *T_SCALES)]
                e = adds[0]
                scale, radius, radial = (_constellation(x2d[i], gt2d[i], visible[i])
                                         if int(visible[i].sum()) >= 6 else (float("nan"), [], []))
                rows.append({"add": e, "ok": float(e < 0.1 * obj.diameter_m),
                             "dz": float(t[i, 2] - tg[i, 2]) if bool(ok[i]) else float("nan"),
                             "z": float(tg[i, 2]), "vis": float(vis[i]), "scale": scale,
                             "radius": radius, "radial": radial,
                             "ok_t_scaled": [float(a < 0.1 * obj.diameter_m)
                                             for a in adds[1:]]})
    return rows


def _print_constellation_bias(rows: list[dict], ok: np.ndarray, dz: np.ndarray) -> None:
    """Whether the predicted keypoints shrink (object too far) and what a t scale would do."""
    scale = np.array([r["scale"] for r in rows])
    vis = np.array([r["vis"] for r in rows])
    z = np.array([r["z"] for r in rows])
    unocc = vis >= 0.95
    print(f"visible-keypoint constellation scale (predicted / true, median): "
          f"{np.nanmedian(scale):.4f} all, {np.nanmedian(scale[unocc]):.4f} unoccluded; "
          f"median t_z ratio {1 + np.nanmedian(dz / z):.4f}")
    radius = np.concatenate([r["radius"] for r in rows])
    radial = np.concatenate([r["radial"] for r in rows])
    bins = []
    for lo, hi in zip(RADIUS_BINS_PX[:-1], RADIUS_BINS_PX[1:]):
        m = (radius >= lo) & (radius < hi)
        bins.append(f"{lo}-{hi} px {np.median(radial[m]):+.2f}" if m.any() else f"{lo}-{hi} -")
    print("median radial residual of visible keypoints by distance from their centroid "
          "(negative: inwards): " + ", ".join(bins))
    scaled = np.array([r["ok_t_scaled"] for r in rows]).mean(0)
    print("ADD@0.1d with every translation scaled by " + ", ".join(
        f"{c}: {a:.1%}" for c, a in zip(T_SCALES, scaled)) + f" (unscaled {ok.mean():.1%})")


def diagnose_pose(checkpoint: str, val_dir: str, train_dir: str) -> None:
    """Print the pose tables (markdown)."""
    obj = load_object_infos(["demo_object"])[0]
    spec = RunSpec(mode="pose", out_dir="unused", toy_frames=1)
    net = build_keypoint_net(spec, [obj])
    net.load_state_dict(load_checkpoint(checkpoint)["model"])
    net.eval()
    task = PoseTask([obj], PoseLossConfig())
    val = _pose_rows(net, task, obj, _open(val_dir, "pose"))
    ok = np.array([r["ok"] for r in val], bool)
    vis = np.array([r["vis"] for r in val])
    dz = np.array([r["dz"] for r in val])
    print(f"ADD@0.1d on {val_dir}: {ok.mean():.1%} of {ok.size} instances\n")
    print("| visible keypoints | instances | ADD@0.1d | median dz of the misses mm |")
    print("|---|---|---|---|")
    for lo, hi in ((0.0, 0.5), (0.5, 0.8), (0.8, 0.95), (0.95, 1.01)):
        m = (vis >= lo) & (vis < hi)
        miss = m & ~ok & np.isfinite(dz)
        mdz = f"{1e3 * np.median(dz[miss]):+.1f}" if miss.any() else "-"
        print(f"| {lo:.0%}-{min(hi, 1.0):.0%} | {int(m.sum())} | "
              f"{ok[m].mean() if m.any() else float('nan'):.1%} | {mdz} |")
    miss = ~ok & np.isfinite(dz)
    print(f"\nmisses estimated too far (dz > 0): {(dz[miss] > 0).mean():.0%} of {int(miss.sum())}")
    _print_constellation_bias(val, ok, dz)
    train_src = SubsetFrameSource(_open(train_dir, "pose"), list(range(0, 2500, 8)))
    train_ok = np.array([r["ok"] for r in _pose_rows(net, task, obj, train_src)], bool)
    print(f"same model on {train_ok.size} training frames of {train_dir} (no augmentation): "
          f"ADD@0.1d {train_ok.mean():.1%}")
    for k in (2, 4):
        sel = SHIFTS[:1] + SHIFTS[3:] if k == 2 else SHIFTS
        tta = np.array([r["ok"] for r in _pose_rows(net, task, obj, _open(val_dir, "pose"),
                                                     sel)], bool)
        print(f"keypoints averaged over {k} input shifts {sel}: ADD@0.1d {tta.mean():.1%}")


def diagnose_depth(checkpoint: str, pose_checkpoint: str, val_dir: str) -> None:
    """Print the depth scale diagnosis."""
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.render.raster import render

    ckpt = load_checkpoint(checkpoint)
    depth_net = build_depth_net(RunSpec(mode="depth", out_dir="unused", toy_frames=1,
                                        depth_net=ckpt["model_config"]))
    depth_net.load_state_dict(ckpt["model"])
    depth_net.eval()
    obj = load_object_infos(["demo_object"])[0]
    pose_net = build_keypoint_net(RunSpec(mode="pose", out_dir="unused", toy_frames=1), [obj])
    pose_net.load_state_dict(load_checkpoint(pose_checkpoint)["model"])
    pose_net.eval()
    task = PoseTask([obj], PoseLossConfig())
    mesh = load_object(find_object_yaml("demo_object")).mesh
    pose_data = PoseDataset(_open(val_dir, "pose"), [obj], 320, 240)
    depth_data = DepthDataset(_open(val_dir, "depth"), 320, 240)
    preds, gts, anchored, frame_ratio, anchor_ratio = [], [], [], [], []
    with torch.no_grad():
        for bp, bd in zip(_make_loader(pose_data, 16, sampler=None, num_workers=0,
                                       drop_last=False),
                          _make_loader(depth_data, 16, sampler=None, num_workers=0,
                                       drop_last=False)):
            pred = depth_from_canonical(depth_net(bd["image"]), bd["fx"],
                                        depth_net.config.focal0_px).double()[:, 0]
            gt = bd["depth"].double().reshape(pred.shape)
            out = pose_net(bp["image"])
            b = int(pred.shape[0])
            R, t, ok = solve_pose_like_pipeline(
                out.x2d[:, 0].double(), task.keypoints_obj[0].expand(b, -1, -1),
                bp["K"].double(), out.weights[:, 0].double(), PoseTask.ransac_threshold_px)
            for i in range(b):
                valid = torch.isfinite(gt[i]) & (gt[i] > 0)
                scale = 1.0
                if bool(ok[i]):  # the object's front surface at the estimated pose
                    z = render(mesh, (R[i].float(), t[i].float()), bp["K"][i].float(), 320,
                               240, shade=False).depth.double()
                    hit = torch.isfinite(z)
                    if int(hit.sum()) >= 50:
                        ratio = z[hit] / pred[i][hit]
                        keep = (ratio / ratio.median() - 1).abs() < 0.15  # not occluders
                        scale = float(ratio[keep].median())
                        anchor_ratio.append(scale)
                        frame_ratio.append(float((gt[i][valid] / pred[i][valid]).median()))
                preds.append(pred[i][valid])
                gts.append(gt[i][valid])
                anchored.append(pred[i][valid] * scale)
    g = torch.cat(gts)

    def abs_rel(p: torch.Tensor) -> float:
        return float(((p - g).abs() / g).mean())

    fr, ar = np.array(frame_ratio), np.array(anchor_ratio)
    q = np.percentile(fr, [25, 50, 75])
    print(f"AbsRel on {val_dir}: model {abs_rel(torch.cat(preds)):.4f}, every frame scaled to "
          f"its detected object's rendered depth {abs_rel(torch.cat(anchored)):.4f}")
    print(f"per-frame truth/prediction median: quartiles {q[0]:.3f} {q[1]:.3f} {q[2]:.3f}; "
          f"correlation with the object-anchored scale {np.corrcoef(fr, ar)[0, 1]:.2f} "
          f"({fr.size} frames)")


def main() -> None:
    """Run one diagnosis."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("pose", "depth"))
    parser.add_argument("--pose", default="runs/pose_demo/best.pt")
    parser.add_argument("--depth", default="runs/depth_demo/best.pt")
    parser.add_argument("--val", default="data/demo_val")
    parser.add_argument("--train", default="data/demo_a")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.what == "pose":
        diagnose_pose(args.pose, args.val, args.train)
    else:
        diagnose_depth(args.depth, args.pose, args.val)


if __name__ == "__main__":
    main()

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Train the learned depth refiner on synthetic rooms and export models/depth_refiner.onnx.

    NUMBA_NUM_THREADS=1 .venv/bin/python tools/train_depth_refiner.py [--sequences 48]
        [--frames 16] [--epochs 16] [--minutes 15] [--out runs/depth_refiner]
        [--export models/depth_refiner.onnx]

1. Data (once; a restart skips the sequences already written): `synth.rooms.room_sequence`
   sequences (320x240, seeds 1000 + i), every other one with its odometry perturbed by 1 cm /
   1 deg per frame (seeded; the classical bundle adjustment then has something to absorb), run
   through the classical `MotionDepthEstimator` (default settings). Per frame with depth: grey,
   the fused classical depth and its input confidence (`learned_refiner.fused_confidence`), the
   true depth -> ``<out>/data/seq_<i:04d>.npz``. The last 4 sequences are held out for validation.
2. Training: random 128x160 crops of whole-frame inputs (the median is the whole frame's, as at
   inference), random flips, random holes cut in the classical depth (the real classical depth
   is sparser than on these renders). Loss: L1 of the normalised log depth over pixels with
   true depth (brought to the classical depth's scale: the refiner must not invent scale) at
   every iteration, weighted 0.8^(N-k) (RAFT/DRO), plus binary cross-entropy of
   the confidence against |log error| < 0.1. Adam, cosine learning rate; a checkpoint
   ``<out>/last.pt`` after each epoch (loaded with `safe_load.load_torch_file`): a restart
   resumes. Stops after `--epochs` or when `--minutes` of training have passed.
3. Export: ONNX opset 17 for 320x240 inputs with metadata
   (`pipeline.depth_refiner.export_refiner`).

Torch runs on one thread. Never trained on real frames.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 320, 240
CROP_H, CROP_W = 128, 160
VAL_SEQUENCES = 4


def generate(out: Path, sequences: int, frames: int) -> None:
    """Write ``out/data/seq_<i:04d>.npz`` for each sequence not written yet."""
    from dvc_perception.files import atomic_path
    from dvc_perception.motion_depth.estimator import STATUS_OK, MotionDepthEstimator
    from dvc_perception.motion_depth.learned_refiner import fused_confidence
    from dvc_perception.refine.evaluation import perturb_pose
    from dvc_perception.synth.rooms import room_sequence

    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for i in range(sequences):
        path = data / f"seq_{i:04d}.npz"
        if path.is_file():
            continue
        seed = 1000 + i
        seq = room_sequence(seed, frames=frames, width=WIDTH, height=HEIGHT)
        rng = np.random.default_rng(seed)
        noisy = i % 2 == 1
        est = MotionDepthEstimator()
        greys, depths, confs, truths = [], [], [], []
        for k, fr in enumerate(seq):
            T = fr.camera_to_world.copy()
            if noisy:
                R, t = perturb_pose(T[:3, :3], T[:3, 3], 1.0, 1.0, 0.01, rng)
                T[:3, :3], T[:3, 3] = R, t
            r = est.estimate(fr.rgb, fr.K, T, k / 30.0)
            state = est._state  # the fused classical inverse depth the refiner sees
            if r.status != STATUS_OK or state is None:
                continue
            inv = state.inv_depth
            with np.errstate(divide="ignore", invalid="ignore"):
                depth = np.where(inv > 0, 1.0 / inv, np.nan).astype(np.float32)
            greys.append(np.round(state.frame.grey * 255).astype(np.uint8))
            depths.append(depth)
            confs.append(fused_confidence(inv, state.variance))
            truths.append(fr.depth.astype(np.float32))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, grey=np.stack(greys), depth=np.stack(depths),
                                    confidence=np.stack(confs), truth=np.stack(truths))
        print(f"data {i + 1}/{sequences}: {len(greys)} frames ({'noisy' if noisy else 'clean'}"
              f" poses), {time.time() - t0:.0f} s", flush=True)


def load_data(out: Path, sequences: int) -> tuple[list[dict], list[dict]]:
    """(train, val) lists of per-sequence arrays."""
    from dvc_perception.safe_load import load_npz

    seqs = [load_npz(out / "data" / f"seq_{i:04d}.npz", what="refiner training data",
                     hint="delete it to regenerate") for i in range(sequences)]
    return seqs[:-VAL_SEQUENCES], seqs[-VAL_SEQUENCES:]


def sample_inputs(seq: dict, k: int, rng: np.random.Generator | None
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(inputs (4, h, w), target (h, w): true log depth - the median, NaN unknown, shift).

    The target is brought to the classical depth's scale (shifted by the median log ratio over
    the known pixels): a frame whose classical scale is wrong (noisy odometry) teaches the
    shape at that scale, not a guess of the true scale; `shift` is what was added (the classical
    depth's log scale error).

    With `rng`, holes are cut in the classical depth first (augmentation).
    """
    import cv2

    from dvc_perception.motion_depth.learned_refiner import classical_inputs

    conf = seq["confidence"][k].copy()
    if rng is not None and rng.random() < 0.6:
        field = cv2.resize(rng.normal(size=(6, 8)).astype(np.float32), (WIDTH, HEIGHT),
                           interpolation=cv2.INTER_CUBIC)
        conf[field > rng.uniform(0.0, 1.5)] = 0.0
    x, median = classical_inputs(seq["grey"][k].astype(np.float32) / 255.0, seq["depth"][k],
                                 conf)
    truth = seq["truth"][k]
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(truth > 0, np.log(truth) - median, np.nan).astype(np.float32)
    both = (x[2] > 0) & np.isfinite(target)
    shift = float(np.median(x[1][both] - target[both])) if both.any() else 0.0
    return x, target + shift, shift  # the classical scale: the refiner must not invent it


def make_batch(train: list[dict], batch: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs (B, 4, 128, 160), targets (B, 128, 160), shifts (B,)): random crops."""
    xs, ts, shifts = [], [], []
    while len(xs) < batch:
        seq = train[rng.integers(len(train))]
        k = int(rng.integers(len(seq["grey"])))
        x, t, shift = sample_inputs(seq, k, rng)
        if not np.isfinite(x).all() or x[2].sum() < 100:
            continue
        y0, x0 = rng.integers(0, HEIGHT - CROP_H + 1), rng.integers(0, WIDTH - CROP_W + 1)
        x, t = x[:, y0:y0 + CROP_H, x0:x0 + CROP_W], t[y0:y0 + CROP_H, x0:x0 + CROP_W]
        if rng.random() < 0.5:
            x, t = x[:, :, ::-1], t[:, ::-1]
        xs.append(np.ascontiguousarray(x))
        ts.append(np.ascontiguousarray(t))
        shifts.append(shift)
    return np.stack(xs), np.stack(ts), np.asarray(shifts, np.float32)


def loss_fn(pred, confidence, target, shift=None, gamma: float = 0.8):
    """Weighted L1 over iterations + confidence BCE; (loss, last-iteration L1).

    With `shift` (B,) the confidence is trained against the error at the true scale (target
    - shift): low where the classical scale is off, as far as the inputs can tell.
    """
    import torch
    from torch.nn import functional as F

    valid = torch.isfinite(target)
    t = torch.where(valid, target, torch.zeros_like(target))
    n = pred.shape[1]
    total = pred.new_zeros(())
    for k in range(n):
        err = (pred[:, k] - t).abs()[valid]
        total = total + gamma ** (n - 1 - k) * err.mean()
    err_last = (pred[:, -1] - t).abs()
    err_conf = err_last if shift is None else (pred[:, -1] - t + shift[:, None, None]).abs()
    good = (err_conf < 0.1).float().detach()
    bce = F.binary_cross_entropy(confidence[:, 0].clamp(1e-4, 1 - 1e-4)[valid], good[valid])
    return total + 0.2 * bce, err_last[valid].mean()


def evaluate(net, val: list[dict]) -> dict[str, float]:
    """AbsRel / delta<1.25 / density of classical and refined depth over the val frames.

    Pooled over the frames' ground-truth pixels (`geometry.metrics.depth_metrics`).
    """
    import torch

    from dvc_perception.geometry.metrics import depth_metrics

    preds: dict[str, list[np.ndarray]] = {"classical": [], "refined": [], "refined_c50": []}
    truths = []
    net.eval()
    with torch.no_grad():
        for seq in val:
            for k in range(0, len(seq["grey"]), 2):
                x, median = _inputs_for_eval(seq, k)
                if not math.isfinite(median):
                    continue
                truths.append(seq["truth"][k])
                pred, conf = net(torch.from_numpy(x[None]), every_iteration=False)
                refined = np.exp(pred[0, -1].numpy() + median)
                preds["classical"].append(np.where(x[2] > 0, seq["depth"][k], np.nan))
                preds["refined"].append(refined)
                preds["refined_c50"].append(np.where(conf[0, 0].numpy() >= 0.5, refined, np.nan))
    net.train()
    out = {}
    for name, frames in preds.items():
        m = depth_metrics(np.stack(frames), np.stack(truths))
        out[f"{name}_abs_rel"] = m["abs_rel"]
        out[f"{name}_delta_1_25"] = m["delta_1_25"]
        out[f"{name}_density"] = m["density"]
    return out


def _inputs_for_eval(seq: dict, k: int) -> tuple[np.ndarray, float]:
    from dvc_perception.motion_depth.learned_refiner import classical_inputs

    return classical_inputs(seq["grey"][k].astype(np.float32) / 255.0, seq["depth"][k],
                            seq["confidence"][k])


def main() -> int:
    """Generate (once), train (resumably) and export."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=48)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=15.0, help="training time limit")
    parser.add_argument("--batches-per-epoch", type=int, default=80)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "depth_refiner")
    parser.add_argument("--export", type=Path, default=ROOT / "models" / "depth_refiner.onnx")
    parser.add_argument("--data-only", action="store_true")
    parser.add_argument("--true-scale-confidence", action="store_true",
                        help="train the confidence against the error at the true scale")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    from dvc_perception.files import atomic_path
    from dvc_perception.models.depth_refiner import build_net
    from dvc_perception.pipeline.depth_refiner import export_refiner
    from dvc_perception.safe_load import load_torch_file
    from dvc_perception.train.records import git_commit

    t_start = time.time()
    generate(args.out, args.sequences, args.frames)
    data_s = time.time() - t_start
    print(f"data ready ({data_s:.0f} s this run)", flush=True)
    if args.data_only:
        return 0
    train, val = load_data(args.out, args.sequences)
    print(f"train frames {sum(len(s['grey']) for s in train)}, val frames "
          f"{sum(len(s['grey']) for s in val)}", flush=True)

    net = build_net()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    total_steps = args.epochs * args.batches_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    ckpt = args.out / "last.pt"
    epoch, train_s, history = 0, 0.0, []
    if ckpt.is_file():
        state = load_torch_file(ckpt, what="depth refiner checkpoint")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        epoch, train_s = int(state["epoch"]), float(state["train_s"])
        history = json.loads(state["history"])
        print(f"resumed after epoch {epoch} ({train_s:.0f} s trained)", flush=True)
    if epoch == 0:
        print("before training:", json.dumps(evaluate(net, val)), flush=True)
    rng = np.random.default_rng(epoch)
    while epoch < args.epochs and train_s < 60 * args.minutes:
        t0 = time.time()
        losses = []
        for _ in range(args.batches_per_epoch):
            x, t, shift = make_batch(train, args.batch, rng)
            pred, conf = net(torch.from_numpy(x))
            loss, l1 = loss_fn(pred, conf, torch.from_numpy(t),
                               torch.from_numpy(shift) if args.true_scale_confidence else None)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(l1.detach()))
        epoch += 1
        train_s += time.time() - t0
        metrics = evaluate(net, val)
        history.append({"epoch": epoch, "train_l1": float(np.mean(losses)), **metrics})
        print(f"epoch {epoch}: train L1(log) {np.mean(losses):.4f}, {train_s:.0f} s; val "
              + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()), flush=True)
        with atomic_path(ckpt) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch, "train_s": train_s,
                        "history": json.dumps(history)}, tmp)
    commit = git_commit(ROOT)
    provenance = {
        "git_commit": commit["commit"], "git_dirty": commit["dirty"],
        "command": " ".join(sys.argv), "date": datetime.now(timezone.utc).isoformat(
            timespec="seconds"), "data_seed": 1000,
        "data": {"kind": "synth.rooms.room_sequence", "sequences": args.sequences,
                 "frames": args.frames, "seeds": [1000, 1000 + args.sequences - 1],
                 "noisy_poses": "odd sequences, 1 cm / 1 deg per frame",
                 "val_sequences": VAL_SEQUENCES},
        "epochs": epoch, "train_s": round(train_s, 1),
        "final_metrics": history[-1] if history else {},
    }
    export_refiner(net, args.export, WIDTH, HEIGHT, provenance)
    print(f"exported {args.export} ({args.export.stat().st_size / 1e3:.0f} kB); training "
          f"{train_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

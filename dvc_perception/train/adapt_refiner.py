# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Self-supervised fine-tuning of the learned depth refiner on a user's own bag (no labels).

Test-time adaptation: the refiner (`models.depth_refiner`, trained on synthetic rooms) is tuned
on the frames it will then run on, from the images, camera_info and camera poses alone
(`bag.motion_frames`); no depth topic is read.

1. `collect_windows`: the frames once through the classical `MotionDepthEstimator` (the
   pipeline's ``pipeline.multiview`` settings, ``record=True``): per depth frame the refiner's
   input (`WindowRecord`: grey, fused depth and confidence at the internal resolution) and the
   swept source frames with the poses the window bundle adjustment produced (at the depth's
   scale). `AdaptData` is cached in the run directory.
2. `load_refiner_onnx`: the torch module rebuilt from the ONNX model's metadata, its weights the
   ONNX initializers.
3. `adapt`: Adam on `adaptation_loss` (batches of whole frames), checkpoints in the run
   directory (a restart resumes), a time budget.
4. The caller exports with `pipeline.depth_refiner.export_refiner` (the shipped model's export).

The loss (`adaptation_loss`): monodepth2's photometric error (0.85 (1 - SSIM) / 2 + 0.15 L1,
3x3 SSIM) between the reference grey image and each source warped with the refined depth and
the adjusted relative pose, the per-pixel minimum over the sources, auto-masked (a pixel counts
only where the best warped source matches better than the best unwarped one: static scenes,
textureless areas, a camera moving with the scene); plus an edge-aware smoothness of the
mean-normalised inverse depth (weight `SMOOTH_WEIGHT`); plus an L1 of the normalised log depth
to the classical input, weighted by the classical confidence where it is at least
`ANCHOR_MIN_CONFIDENCE` (`ANCHOR_WEIGHT`: the output cannot drift from the measured depth);
plus the binary cross-entropy of the refined confidence against the starting model's own on the
same input (`CONFIDENCE_WEIGHT`: no label says where the depth is right, so the confidence is
kept, not learnt). The refined depth is ``exp(log depth + classical median)``: the refiner's
contract, the scale stays the classical one.

Measured (benchmarks/RESULTS.md, issue 22): on the real kitchen and on rendered rooms this
adaptation lowers the photometric loss a little and makes the depth worse, mostly on flat
pixels, where the photometric loss is blind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.errors import ConfigError, InputError, ModelSpecError

#: SSIM's share of the photometric error (monodepth2).
SSIM_WEIGHT = 0.85
SMOOTH_WEIGHT = 1e-3
ANCHOR_WEIGHT = 0.2
#: Classical input confidence (`learned_refiner.fused_confidence`) from which the anchor holds.
ANCHOR_MIN_CONFIDENCE = 0.5
CONFIDENCE_WEIGHT = 0.05
#: Fewer depth frames than this: nothing to adapt on.
MIN_FRAMES = 4
#: Photometric error given to a pixel that falls outside a source (never the minimum then).
_OUTSIDE = 10.0


@dataclass
class AdaptData:
    """The classical estimator's per-frame output that adaptation learns from (no labels).

    At the model's input size (w, h); F frames read, M of them with depth, S sources at most.

    Attributes:
        greys: (F, h, w) float32 grey images in [0, 1], bag order.
        ref: (M,) int64 index into `greys` of each depth frame.
        depth: (M, h, w) float32 the refiner's input depth [m], NaN unknown.
        confidence: (M, h, w) float32 its input confidence in [0, 1].
        sources: (M, S) int64 indices into `greys` of the swept sources, -1 for none.
        poses: (M, S, 4, 4) float64 reference camera -> source camera [m], adjusted.
        K: (M, 3, 3) float64 intrinsics at (w, h) [px].
    """

    greys: np.ndarray
    ref: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    sources: np.ndarray
    poses: np.ndarray
    K: np.ndarray

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write an ``.npz`` atomically, `meta` as JSON next to the arrays."""
        from dvc_perception.files import atomic_path

        arrays = {k: getattr(self, k) for k in self.__dataclass_fields__}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)

    @classmethod
    def load(cls, path: Path) -> tuple[AdaptData, dict[str, Any]]:
        """(data, meta) written by `save`; raises `InputError` for a bad file."""
        from dvc_perception.safe_load import load_npz

        keys = ["meta", *cls.__dataclass_fields__]
        arrays = load_npz(path, keys, what="depth refiner adaptation cache",
                          hint="delete it to run the classical pass again")
        meta = json.loads(str(arrays.pop("meta")))
        return cls(**arrays), meta


def collect_windows(frames: Iterable[Any], settings: Any, size: tuple[int, int],
                    on_frame: Callable[[str], None] | None = None) -> tuple[AdaptData, dict]:
    """Run the classical estimator over `frames` (`bag.motion_frames.MotionFrame`) once.

    Args:
        frames: the bag's frames in order.
        settings: `MotionDepthSettings` (the pipeline's, `pipeline.multiview`).
        size: (w, h) of the model's input: everything is resized to it (area for grey, nearest
            for depth and confidence, K by `CameraModel.resized`'s rule) where the internal
            size differs.
        on_frame: called with each frame's depth status (``no_pose`` without a pose).

    Returns:
        (data, counts of the statuses).

    Raises:
        InputError: fewer than `MIN_FRAMES` frames with depth (naming the statuses).
    """
    from dvc_perception.motion_depth.estimator import STATUS_OK, MotionDepthEstimator

    est = MotionDepthEstimator(settings, record=True)
    greys: list[np.ndarray] = []
    index: dict[int, int] = {}  # id of a stored frame's grey -> its index in greys
    rows: list[tuple[int, Any]] = []
    counts: dict[str, int] = {}
    for frame in frames:
        status = "no_pose"
        if frame.camera_to_world is not None:
            r = est.estimate(frame.rgb, frame.K, frame.camera_to_world, frame.stamp_ns * 1e-9)
            status = r.status
            grey = est.window.frames[-1].grey
            index[id(grey)] = len(greys)
            greys.append(grey)
            if r.status == STATUS_OK and est.last_window is not None:
                rows.append((index[id(grey)], est.last_window))
        counts[status] = counts.get(status, 0) + 1
        if on_frame is not None:
            on_frame(status)
    if len(rows) < MIN_FRAMES:
        found = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no frames"
        raise InputError(f"{len(rows)} frame(s) with depth from motion ({found}); adaptation "
                         f"expects at least {MIN_FRAMES}: a camera that moves (translates, not "
                         "only turns) past textured surfaces, with a pose for each image")
    S = max(len(w.sources) for _, w in rows)
    sources = np.full((len(rows), S), -1, np.int64)
    poses = np.tile(np.eye(4), (len(rows), S, 1, 1))
    for m, (_, w) in enumerate(rows):
        for s, (src, T) in enumerate(zip(w.sources, w.poses)):
            sources[m, s] = index[id(src.grey)]
            poses[m, s] = T
    data = AdaptData(np.stack(greys), np.array([i for i, _ in rows], np.int64),
                     np.stack([w.depth for _, w in rows]),
                     np.stack([w.confidence for _, w in rows]), sources, poses,
                     np.stack([w.K for _, w in rows]))
    return _resized(data, size), counts


def _resized(data: AdaptData, size: tuple[int, int]) -> AdaptData:
    """`data` at (w, h) = `size` (unchanged when it already is)."""
    import cv2

    h, w = data.greys.shape[1:]
    if (w, h) == tuple(size):
        return data

    def each(a: np.ndarray, interpolation: int) -> np.ndarray:
        return np.stack([cv2.resize(x, tuple(size), interpolation=interpolation) for x in a])

    from dvc_perception.geometry.camera import CameraModel

    K = np.stack([CameraModel(k, np.zeros(0), w, h).resized(*size).K.numpy() for k in data.K])
    return AdaptData(each(data.greys, cv2.INTER_AREA), data.ref,
                     each(data.depth, cv2.INTER_NEAREST), each(data.confidence, cv2.INTER_NEAREST),
                     data.sources, data.poses, K)


def load_refiner_onnx(path: str | Path) -> tuple[Any, Any]:
    """(torch `DepthRefinerNet` with the ONNX model's weights, its `ModelMetadata`).

    The network is rebuilt from the metadata's architecture kwargs (`export_refiner` writes
    them) and its parameters are the ONNX initializers (named ``net.<parameter>``).

    Raises:
        ModelSpecError: not a readable model, not a depth refiner (metadata task), or weights
            that do not fit the network.
    """
    import onnx
    import torch
    from onnx import numpy_helper

    from dvc_perception.engines.export import read_model_metadata
    from dvc_perception.models.depth_refiner import build_net
    from dvc_perception.motion_depth.learned_refiner import TASK

    meta = read_model_metadata(path)
    if meta.task != TASK:
        raise ModelSpecError(f"{path}: task {meta.task!r}; expected a depth refiner (task "
                             f"{TASK!r}, as models/depth_refiner.onnx or export_refiner writes)")
    kwargs = dict(meta.architecture.get("kwargs", {}))
    try:
        net = build_net(**kwargs)
    except TypeError as err:
        raise ModelSpecError(f"{path}: architecture kwargs {kwargs} do not build the refiner: "
                             f"{err}") from err
    inits = {i.name: i for i in onnx.load(str(path)).graph.initializer}
    state = {}
    for name, param in net.state_dict().items():
        init = inits.get(f"net.{name}")
        if init is None:
            raise ModelSpecError(f"{path}: no initializer net.{name}: not a refiner exported by "
                                 "export_refiner")
        value = torch.from_numpy(numpy_helper.to_array(init).copy())
        if value.shape != param.shape:
            raise ModelSpecError(f"{path}: net.{name} has shape {tuple(value.shape)}, the "
                                 f"network expects {tuple(param.shape)}")
        state[name] = value
    net.load_state_dict(state)
    return net, meta


# ----------------------------------------------------------------------------------- losses


def _ssim_error(a: Any, b: Any) -> Any:
    """(1 - SSIM) / 2 of (B, 1, H, W) images over 3x3 windows, in [0, 1] (monodepth2)."""
    from torch.nn import functional as F

    a, b = F.pad(a, (1, 1, 1, 1), mode="reflect"), F.pad(b, (1, 1, 1, 1), mode="reflect")
    mu_a, mu_b = F.avg_pool2d(a, 3, 1), F.avg_pool2d(b, 3, 1)
    var_a = F.avg_pool2d(a * a, 3, 1) - mu_a ** 2
    var_b = F.avg_pool2d(b * b, 3, 1) - mu_b ** 2
    cov = F.avg_pool2d(a * b, 3, 1) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def photometric_error(a: Any, b: Any) -> Any:
    """(B, 1, H, W) per-pixel error of two grey images: SSIM and L1 mixed as monodepth2."""
    return SSIM_WEIGHT * _ssim_error(a, b) + (1 - SSIM_WEIGHT) * (a - b).abs()


def warp(source: Any, depth: Any, T: Any, K: Any) -> tuple[Any, Any]:
    """The source image (1, 1, h, w) seen from the reference camera; (warped, inside mask).

    `depth` (1, 1, h, w) reference depth [m]; `T` (4, 4) reference -> source camera [m]; `K`
    (3, 3) [px], pixel centres at integers. Bilinear; ``inside``: in front of the source camera
    and within its image.
    """
    import torch
    from torch.nn import functional as F

    _, _, h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=depth.dtype), torch.arange(w, dtype=depth.dtype),
                          indexing="ij")
    rays = torch.linalg.solve(K, torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1))
    X = T[:3, :3] @ (rays * depth.reshape(1, -1)) + T[:3, 3:]
    z = X[2].clamp(min=1e-3)
    uv = (K[:2, :2] @ X[:2] + K[:2, 2:] * X[2:]) / z
    gx = 2 * uv[0] / (w - 1) - 1
    gy = 2 * uv[1] / (h - 1) - 1
    grid = torch.stack([gx, gy], -1).reshape(1, h, w, 2)
    warped = F.grid_sample(source, grid, mode="bilinear", padding_mode="border",
                           align_corners=True)
    inside = (X[2] > 1e-3) & (gx.abs() <= 1) & (gy.abs() <= 1)
    return warped, inside.reshape(1, 1, h, w)


def photometric_loss(target: Any, sources: list[Any], depth: Any, poses: list[Any], K: Any
                     ) -> tuple[Any, Any]:
    """Auto-masked minimum reprojection error of one frame; (mean loss, mask (1, 1, h, w)).

    `target` (1, 1, h, w) reference grey; `sources` the source greys; `poses` reference ->
    source (4, 4); `depth` (1, 1, h, w) [m].
    """
    import torch

    reproj, identity = [], []
    for src, T in zip(sources, poses):
        warped, inside = warp(src, depth, T, K)
        e = photometric_error(warped, target)
        reproj.append(torch.where(inside, e, torch.full_like(e, _OUTSIDE)))
        identity.append(photometric_error(src, target))
    best = torch.cat(reproj, 1).min(1, keepdim=True).values
    still = torch.cat(identity, 1).min(1, keepdim=True).values + 1e-5
    mask = ((best < still) & (best < _OUTSIDE)).detach()
    n = mask.sum().clamp(min=1)
    return (best * mask).sum() / n, mask


def smoothness_loss(depth: Any, grey: Any) -> Any:
    """Edge-aware smoothness of the mean-normalised inverse depth (monodepth2); (B, 1, h, w)."""
    disp = 1.0 / depth
    disp = disp / disp.mean((2, 3), keepdim=True).clamp(min=1e-6)
    dx = (disp[..., :, 1:] - disp[..., :, :-1]).abs()
    dy = (disp[..., 1:, :] - disp[..., :-1, :]).abs()
    ix = (grey[..., :, 1:] - grey[..., :, :-1]).abs()
    iy = (grey[..., 1:, :] - grey[..., :-1, :]).abs()
    return (dx * (-ix).exp()).mean() + (dy * (-iy).exp()).mean()


@dataclass
class Batch:
    """Torch inputs of some frames of `AdaptData` (`make_batch`).

    Attributes:
        x: (B, 4, h, w) refiner inputs (`classical_inputs`).
        median: (B,) the classical median log depth of each.
        grey: (B, 1, h, w) reference greys.
        sources: per frame, its source greys (1, 1, h, w).
        poses: per frame, reference -> source (4, 4) float32.
        K: (B, 3, 3) float32.
        teacher: (B, 1, h, w) the starting model's confidence (None: not computed).
    """

    x: Any
    median: Any
    grey: Any
    sources: list[list[Any]]
    poses: list[list[Any]]
    K: Any
    teacher: Any = None


def make_batch(data: AdaptData, frames: Iterable[int]) -> Batch:
    """The `Batch` of the depth frames `frames` (indices into ``data.ref``)."""
    import torch

    from dvc_perception.motion_depth.learned_refiner import classical_inputs

    xs, medians, greys, sources, poses, Ks = [], [], [], [], [], []
    for m in frames:
        grey = data.greys[data.ref[m]]
        x, median = classical_inputs(grey, data.depth[m], data.confidence[m])
        xs.append(x)
        medians.append(median)
        greys.append(grey)
        keep = [s for s in range(data.sources.shape[1]) if data.sources[m, s] >= 0]
        sources.append([torch.from_numpy(data.greys[data.sources[m, s]])[None, None]
                        for s in keep])
        poses.append([torch.from_numpy(data.poses[m, s]).float() for s in keep])
        Ks.append(data.K[m])
    return Batch(torch.from_numpy(np.stack(xs)), torch.tensor(medians, dtype=torch.float32),
                 torch.from_numpy(np.stack(greys))[:, None], sources, poses,
                 torch.from_numpy(np.stack(Ks)).float())


def adaptation_loss(net: Any, batch: Batch) -> tuple[Any, dict[str, float]]:
    """The module docstring's loss of `net` on `batch`; (loss, its parts as floats)."""
    import torch
    from torch.nn import functional as F

    log_rel, conf = net(batch.x, every_iteration=False)
    log_rel = log_rel[:, -1:]
    depth = torch.exp(log_rel + batch.median[:, None, None, None])
    photo = torch.stack([photometric_loss(batch.grey[b:b + 1], batch.sources[b],
                                          depth[b:b + 1], batch.poses[b], batch.K[b])[0]
                         for b in range(len(batch.sources))]).mean()
    smooth = smoothness_loss(depth, batch.grey)
    known, rel, c = batch.x[:, 2:3], batch.x[:, 1:2], batch.x[:, 3:4]
    w = known * c * (c >= ANCHOR_MIN_CONFIDENCE)
    anchor = (w * (log_rel - rel).abs()).sum() / w.sum().clamp(min=1.0)
    parts = {"photometric": photo, "smooth": smooth, "anchor": anchor}
    loss = photo + SMOOTH_WEIGHT * smooth + ANCHOR_WEIGHT * anchor
    if batch.teacher is not None:
        bce = F.binary_cross_entropy(conf.clamp(1e-4, 1 - 1e-4), batch.teacher)
        parts["confidence"] = bce
        loss = loss + CONFIDENCE_WEIGHT * bce
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def mean_photometric_loss(net: Any, data: AdaptData) -> float:
    """The masked photometric loss of `net`'s depth averaged over every depth frame."""
    import torch

    was_training = net.training
    net.eval()
    losses = []
    with torch.no_grad():
        for m in range(len(data.ref)):
            _, parts = adaptation_loss(net, make_batch(data, [m]))
            losses.append(parts["photometric"])
    net.train(was_training)
    return float(np.mean(losses))


def teacher_confidence(net: Any, data: AdaptData) -> np.ndarray:
    """(M, 1, h, w) float32 confidence of `net` (the starting model) on every depth frame."""
    import torch

    out = []
    with torch.no_grad():
        for m in range(len(data.ref)):
            out.append(net(make_batch(data, [m]).x, every_iteration=False)[1][0].numpy())
    return np.stack(out).astype(np.float32)


# --------------------------------------------------------------------------------- training


@dataclass(frozen=True)
class AdaptSettings:
    """The optimisation (`adapt`). `steps` None: until `minutes` of training have passed."""

    steps: int | None = None
    minutes: float = 20.0
    batch: int = 2
    lr: float = 1e-4
    seed: int = 0
    checkpoint_s: float = 60.0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 0:
            raise ConfigError(f"steps: expected >= 0, got {self.steps}")
        if not self.minutes > 0 or self.batch < 1 or not self.lr > 0:
            raise ConfigError(f"expected minutes > 0, batch >= 1 and lr > 0, got "
                              f"{self.minutes}, {self.batch} and {self.lr}")


@dataclass
class AdaptResult:
    """What `adapt` did: steps and training seconds in all (resumed runs included), history."""

    steps: int
    train_s: float
    history: list[dict[str, float]]
    resumed_from: int


def adapt(net: Any, start: Any, data: AdaptData, settings: AdaptSettings, checkpoint: Path,
          run_key: str, progress: bool = True) -> AdaptResult:
    """Fine-tune `net` in place on `data`; resumes from `checkpoint` (same `run_key`).

    `start`: the starting model (`load_refiner_onnx`, not trained), whose confidence the
    adapted one keeps. Frames of step k are drawn by a generator seeded with (seed, k), so a
    resumed run draws what the uninterrupted one would have. A checkpoint is written every
    `checkpoint_s` and at the end (`safe_load.load_torch_file` reads it).

    Raises:
        ConfigError: `checkpoint` is of another run (other model, bag or settings).
    """
    import torch
    from tqdm import tqdm

    from dvc_perception.files import atomic_path
    from dvc_perception.safe_load import load_torch_file

    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    step, train_s, history = 0, 0.0, []
    if checkpoint.is_file():
        state = load_torch_file(checkpoint, what="depth refiner adaptation checkpoint")
        if state.get("run_key") != run_key:
            raise ConfigError(f"{checkpoint} is the checkpoint of another adaptation run (other "
                              "model, bag or settings); delete it or choose another --out")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, train_s = int(state["step"]), float(state["train_s"])
        history = json.loads(state["history"])
    resumed_from = step
    teacher = torch.from_numpy(teacher_confidence(start.eval(), data))

    def save() -> None:
        with atomic_path(checkpoint) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "step": step,
                        "train_s": train_s, "history": json.dumps(history),
                        "run_key": run_key}, tmp)

    budget_s = 60.0 * settings.minutes
    bar = tqdm(total=settings.steps, initial=step, desc="adapt", unit="step",
               disable=not progress)
    last_save, parts_sum, n_sum = time.time(), {}, 0
    net.train()
    try:
        while (settings.steps is None or step < settings.steps) and train_s < budget_s:
            t0 = time.time()
            rng = np.random.default_rng([settings.seed, step])
            frames = rng.choice(len(data.ref), size=min(settings.batch, len(data.ref)),
                                replace=False)
            batch = make_batch(data, frames)
            batch.teacher = teacher[frames]
            loss, parts = adaptation_loss(net, batch)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            step += 1
            train_s += time.time() - t0
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            n_sum += 1
            bar.update(1)
            bar.set_postfix(photometric=f"{parts['photometric']:.4f}",
                            minutes=f"{train_s / 60:.1f}")
            if step % 50 == 0:
                history.append({"step": step, "train_s": round(train_s, 1),
                                **{k: v / n_sum for k, v in parts_sum.items()}})
                parts_sum, n_sum = {}, 0
            if time.time() - last_save > settings.checkpoint_s:
                save()
                last_save = time.time()
    finally:
        bar.close()
    save()
    return AdaptResult(step, train_s, history, resumed_from)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Training tasks: what `loop.train` needs from one (`TrainTask`), and the four tasks.

`PoseTask` (keypoint network), `DepthTask` (depth network), `DetectionTask` (detector),
`VerifierTask` (the box verifier's crop classifier).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from types import SimpleNamespace
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from dvc_perception.models.depth_net import depth_to_canonical
from dvc_perception.models.keypoint_net import HEATMAP_STRIDE
from dvc_perception.train import losses as L  # noqa: N812 - short alias for the loss module
from dvc_perception.train.config import DepthLossConfig, PoseLossConfig
from dvc_perception.train.datasets import ObjectInfo
from dvc_perception.train.device import model_device


class TrainTask(Protocol):
    """What `train` needs from a task."""

    name: str
    primary_metric: str
    maximize: bool

    def loss(self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int) -> tuple[
        Tensor, dict[str, float]
    ]:
        """(total loss, scalar components for the log) on one batch."""
        ...

    def evaluate(self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]) -> dict[
        str, float
    ]:
        """Validation metrics over a loader."""
        ...


def _stack_keypoints(objects: Sequence[ObjectInfo]) -> Tensor:
    return torch.as_tensor(np.stack([o.keypoints_obj for o in objects]), dtype=torch.float64)


class PoseTask:
    """Keypoint-network training: heatmap + keypoint + confidence + mask + pose-through-PnP.

    Args:
        objects: the network's objects, in output order.
        config: loss weights.
    """

    name = "pose"
    primary_metric = "val_add_recall"
    maximize = True

    #: RANSAC inlier threshold of the validation poses, px at the network input
    ransac_threshold_px = 4.0

    def __init__(self, objects: Sequence[ObjectInfo], config: PoseLossConfig) -> None:
        self.objects = tuple(objects)
        self.config = config
        self.keypoints_obj = _stack_keypoints(self.objects)  # (O, K, 3)
        self.radii_m = torch.tensor([0.5 * o.diameter_m for o in self.objects])  # (O,)

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss on one batch and its components (see `PoseLossConfig`)."""
        cfg = self.config
        out = model(batch["image"])
        present = batch["present"]
        valid = batch["kp_in_image"] & present.unsqueeze(-1)
        l_hm = L.heatmap_loss(out.heatmap_logits, batch["keypoints"], valid, HEATMAP_STRIDE,
                              cfg.sigma_cells)
        l_kp = L.keypoint_loss(out.x2d, batch["keypoints"], valid)
        l_conf = L.confidence_loss(out.weights, batch["kp_visible"], present)
        l_mask = L.mask_loss(out.mask_logits, batch["mask"])
        total = cfg.heatmap * l_hm + cfg.keypoint * l_kp + cfg.confidence * l_conf
        total = total + cfg.mask * l_mask
        parts = {"heatmap": float(l_hm.detach()), "keypoint_px": float(l_kp.detach()),
                 "confidence": float(l_conf.detach()), "mask": float(l_mask.detach())}
        if getattr(out, "coordinates", None) is not None and "coordinates" in batch:
            l_xyz = L.coordinate_loss(out.coordinates, batch["coordinates"],
                                      batch["coordinates_valid"], self.radii_m)
            total = total + cfg.coordinates * l_xyz
            parts["coordinates"] = float(l_xyz.detach())
        if cfg.use_pose_loss and epoch >= cfg.pose_warmup_epochs:
            l_pose, n_ok = self.pose_loss(out.x2d, out.weights, batch)
            total = total + cfg.pose * l_pose
            parts["pose_px"] = float(l_pose.detach())
            parts["pose_ok"] = n_ok
        parts["total"] = float(total.detach())
        return total, parts

    def pose_loss(
        self, x2d: Tensor, weights: Tensor, batch: Mapping[str, Tensor]
    ) -> tuple[Tensor, float]:
        """Reprojection loss through `solve_pnp` on every present object (float64 solve).

        Args:
            x2d: (B, O, K, 2) px predicted keypoints.
            weights: (B, O, K) predicted confidences (detached and floored for PnP).
            batch: the batch (``present``, ``K``, ``R``, ``t``).

        Returns:
            (loss, fraction of present objects whose solve was valid).
        """
        present = batch["present"]
        if not bool(present.any()):
            return x2d.sum() * 0.0, 0.0
        b, o = int(present.shape[0]), int(present.shape[1])
        kp3d = self.keypoints_obj.to(x2d.device).unsqueeze(0).expand(b, -1, -1, -1)[present]
        K = batch["K"].to(torch.float64).unsqueeze(1).expand(-1, o, -1, -1)[present]
        w = weights.detach().clamp_min(self.config.pose_weight_floor)[present]
        loss, ok = L.pose_reprojection_loss(
            x2d[present].to(torch.float64), w.to(torch.float64), kp3d, K,
            batch["R"][present], batch["t"][present], clamp_px=self.config.pose_clamp_px,
        )
        return loss.to(x2d.dtype), float(ok.to(torch.float64).mean())

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """ADD(-S)@0.1d recall, median rotation/translation/keypoint errors, mask IoU.

        Every present object of every frame is one instance; a failed PnP counts as a miss
        (infinite errors). Poses come from confidence-weighted RANSAC + refinement, as in the
        pipeline (`solve_pose_like_pipeline`).
        """
        from dvc_perception.geometry.metrics import (
            add_error,
            adds_error,
            rotation_error_deg,
            translation_error,
        )
        add_ok, rot, trans, kp_err, ious, xyz_err = [], [], [], [], [], []
        was_training = model.training
        model.eval()
        device = model_device(model)
        for batch in loader:  # the network on its device, the rest (PnP, metrics) on the CPU
            raw = model(batch["image"].to(device))  # any object with these three fields
            out = SimpleNamespace(x2d=raw.x2d.float().cpu(), weights=raw.weights.float().cpu(),
                                  mask_logits=raw.mask_logits.float().cpu())
            dense = getattr(raw, "coordinates", None)
            if dense is not None:
                dense = dense.float().cpu()
                if "coordinates" in batch and bool(batch["coordinates_valid"].any()):
                    cv = batch["coordinates_valid"]
                    e = (dense - batch["coordinates"]).norm(dim=2)[cv]
                    xyz_err.append(e.double())
            present = batch["present"]
            valid = batch["kp_in_image"] & present.unsqueeze(-1)
            err = (out.x2d.double() - batch["keypoints"].double()).norm(dim=-1)
            kp_err.append(err[valid])
            pred_mask = torch.sigmoid(out.mask_logits) > 0.5
            gt_mask = batch["mask"] > 0.5
            inter = (pred_mask & gt_mask).flatten(2).sum(-1).double()
            union = (pred_mask | gt_mask).flatten(2).sum(-1).double()
            ious.append((inter / union.clamp_min(1))[present])
            if not bool(present.any()):
                continue
            b, o = int(present.shape[0]), int(present.shape[1])
            obj_idx = torch.arange(o).unsqueeze(0).expand(b, -1)[present]
            kp3d = self.keypoints_obj.unsqueeze(0).expand(b, -1, -1, -1)[present]
            K = batch["K"].double().unsqueeze(1).expand(-1, o, -1, -1)[present]
            if dense is None:
                R_est, t_est, ok = solve_pose_like_pipeline(
                    out.x2d[present].double(), kp3d, K, out.weights[present].double(),
                    self.ransac_threshold_px)
            else:
                R_est, t_est, ok = self._dense_poses(dense, torch.sigmoid(out.mask_logits),
                                                     batch["K"], present)
            R_gt, t_gt = batch["R"][present].double(), batch["t"][present].double()
            for n in range(int(obj_idx.shape[0])):
                info = self.objects[int(obj_idx[n])]
                if not bool(ok[n]):
                    add_ok.append(False)
                    rot.append(math.inf)
                    trans.append(math.inf)
                    continue
                pts = torch.as_tensor(info.points_obj, dtype=torch.float64)
                metric = adds_error if info.symmetric else add_error
                e = float(metric(R_est[n : n + 1], t_est[n : n + 1], R_gt[n : n + 1],
                                 t_gt[n : n + 1], pts)[0])
                add_ok.append(e < 0.1 * info.diameter_m)
                rot.append(float(rotation_error_deg(R_est[n : n + 1], R_gt[n : n + 1])[0]))
                trans.append(float(translation_error(t_est[n : n + 1], t_gt[n : n + 1])[0]))
        model.train(was_training)
        kp = torch.cat(kp_err) if kp_err else torch.zeros(0, dtype=torch.float64)
        iou = torch.cat(ious) if ious else torch.zeros(0, dtype=torch.float64)
        nan = float("nan")
        return {
            "val_add_recall": float(np.mean(add_ok)) if add_ok else nan,
            "val_rot_err_deg_median": float(np.median(rot)) if rot else nan,
            "val_trans_err_m_median": float(np.median(trans)) if trans else nan,
            "val_kp_err_px_median": float(kp.median()) if kp.numel() else nan,
            "val_mask_iou": float(iou.mean()) if iou.numel() else nan,
            "val_instances": float(len(add_ok)),
            **({"val_coord_err_mm_median": 1e3 * float(torch.cat(xyz_err).median())}
               if xyz_err else {}),
        }

    def _dense_poses(self, coordinates: Tensor, mask_prob: Tensor, K: Tensor, present: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
        """Poses of the present objects from the dense coordinates, as the pipeline solves them.

        Args:
            coordinates: (B, O, 3, h, w) m.
            mask_prob: (B, O, h, w).
            K: (B, 3, 3) intrinsics of the input.
            present: (B, O) bool.

        Returns:
            (R (N, 3, 3), t (N, 3), ok (N,)) for the N present objects in row-major order.
        """
        from dvc_perception.models.heads import dense_correspondences

        Rs, ts, oks = [], [], []
        for bi, oi in torch.nonzero(present).tolist():
            x2d, x3d, w = dense_correspondences(coordinates[bi, oi].numpy(),
                                                mask_prob[bi, oi].numpy(), HEATMAP_STRIDE)
            if x2d.shape[0] < 6:
                Rs.append(torch.eye(3, dtype=torch.float64))
                ts.append(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
                oks.append(False)
                continue
            R, t, ok = solve_pose_like_pipeline(
                torch.from_numpy(x2d)[None], torch.from_numpy(x3d)[None],
                K[bi].double()[None], torch.from_numpy(w)[None], self.ransac_threshold_px)
            Rs.append(R[0])
            ts.append(t[0])
            oks.append(bool(ok[0]))
        return torch.stack(Rs), torch.stack(ts), torch.tensor(oks, dtype=torch.bool)


def solve_pose_like_pipeline(
    x2d: Tensor, x3d: Tensor, K: Tensor, weights: Tensor, threshold_px: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Validation poses by the pipeline's own robust solver (`pipeline.pose.estimate_poses`).

    Settings: RANSAC on every sample (``always_ransac``), 64 hypotheses, seed 0, 20 LM
    iterations; by default the pipeline first tries one weighted LM fit of all keypoints.

    Args:
        x2d: (N, K, 2) px keypoints.
        x3d: (N, K, 3) m object points.
        K: (N, 3, 3) intrinsics px.
        weights: (N, K) keypoint confidences.
        threshold_px: inlier threshold px.

    Returns:
        (R (N, 3, 3), t (N, 3) m, ok (N,) bool).
    """
    from dvc_perception.config import PnPConfig
    from dvc_perception.pipeline.pose import estimate_poses

    settings = PnPConfig(threshold_px=threshold_px, num_hypotheses=64, always_ransac=True,
                         max_iterations=20, seed=0)
    try:
        found = estimate_poses(x2d, x3d, K, weights, settings)
    except torch.linalg.LinAlgError:  # a degenerate sample: fall back to the guarded solver
        return L.solve_pnp_guarded(x2d, x3d, K, weights)
    return found.R, found.t, found.valid


class DepthTask:
    """Depth-network training on canonical depth: SILog + L1.

    Args:
        focal0_px: the network's canonical focal length px.
        config: loss weights.
    """

    name = "depth"
    primary_metric = "val_abs_rel"
    maximize = False

    def __init__(self, focal0_px: float, config: DepthLossConfig) -> None:
        self.focal0_px = float(focal0_px)
        self.config = config

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Total loss on one batch and its components."""
        cfg = self.config
        pred = model(batch["image"])
        target, valid = L.nan_to_invalid(batch["depth"])
        target = depth_to_canonical(target, batch["fx"], self.focal0_px).to(pred.dtype)
        l_si = L.silog_loss(pred, target, valid, cfg.silog_lambda)
        l_l1 = L.depth_l1_loss(pred, target, valid)
        total = cfg.silog * l_si + cfg.l1 * l_l1
        parts = {"silog": float(l_si.detach()), "l1_m": float(l_l1.detach()),
                 "total": float(total.detach())}
        return total, parts

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """AbsRel, RMSE [m] and delta<1.25 of metric depth, pooled over all valid pixels."""
        from dvc_perception.geometry.metrics import depth_metrics
        from dvc_perception.models.depth_net import depth_from_canonical

        preds, gts = [], []
        was_training = model.training
        model.eval()
        device = model_device(model)
        for batch in loader:
            pred = model(batch["image"].to(device)).float().cpu()
            pred = depth_from_canonical(pred, batch["fx"], self.focal0_px)
            preds.append(pred.double().flatten())
            gts.append(batch["depth"].double().flatten())
        model.train(was_training)
        m = depth_metrics(torch.cat(preds), torch.cat(gts))
        return {"val_abs_rel": m["abs_rel"], "val_rmse_m": m["rmse"],
                "val_delta_1_25": m["delta_1_25"]}


class DetectionTask:
    """Detector training (`models.detector_net.DetectorNet`): CenterNet focal loss + L1.

    The loss is `train.detection.detection_loss` on the dense targets of `DetectionDataset`.
    Validation decodes every image like the pipeline (`pipeline.detection.decode_detections`,
    min score `min_score`, per-class NMS) and matches the detections to the ground-truth boxes
    (`train.detection.count_matches`: same class, IoU >= `match_iou`, each detection and box
    used once), pooled over the validation set.

    Args:
        object_ids: the detector's classes, in output order.
    """

    name = "detect"
    primary_metric = "val_det_f1"
    maximize = True

    #: least centre probability of a validation detection (the decoder's default)
    min_score = 0.3
    #: least IoU of a validation match
    match_iou = 0.5

    def __init__(self, object_ids: Sequence[str]) -> None:
        self.object_ids = tuple(str(i) for i in object_ids)

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """`detection_loss` on one batch and its components (``num_instances`` included)."""
        from dvc_perception.train.detection import detection_loss

        return detection_loss(model(batch["image"]), batch)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """Box recall, precision and F1 at IoU 0.5, and the validation loss.

        ``val_det_recall`` = matched ground-truth boxes / ground-truth boxes,
        ``val_det_precision`` = matched detections / detections, ``val_det_f1`` = 2 TP / (2 TP
        + FP + FN) (their harmonic mean; 0 when nothing matched; NaN only with neither boxes
        nor detections); ``val_det_loss`` the mean batch loss; ``val_det_instances`` and
        ``val_det_detections`` the counts.
        """
        from dvc_perception.models.detector_net import DETECTOR_STRIDE
        from dvc_perception.pipeline.detection import decode_detections
        from dvc_perception.train.detection import count_matches, detection_loss

        n_gt = n_det = n_tp = 0
        losses: list[float] = []
        was_training = model.training
        model.eval()
        device = model_device(model)
        for batch in loader:  # the network on its device, decoding and matching on the CPU
            raw = model(batch["image"].to(device))
            out = SimpleNamespace(centre_logits=raw.centre_logits.float().cpu(),
                                  size=raw.size.float().cpu(), offset=raw.offset.float().cpu())
            losses.append(float(detection_loss(out, batch)[0]))
            prob = torch.sigmoid(out.centre_logits).numpy()
            size, offset = out.size.numpy(), out.offset.numpy()
            for b in range(int(prob.shape[0])):
                dets = decode_detections(prob[b], size[b], offset[b], stride=DETECTOR_STRIDE,
                                         min_score=self.min_score)
                real = batch["box_class"][b] >= 0
                gt_boxes = batch["boxes"][b][real].double().numpy()
                gt_classes = batch["box_class"][b][real].numpy()
                n_gt += int(gt_classes.size)
                n_det += len(dets)
                n_tp += count_matches(dets, gt_boxes, gt_classes, self.match_iou)
        model.train(was_training)
        nan = float("nan")
        denominator = 2 * n_tp + (n_det - n_tp) + (n_gt - n_tp)
        return {
            "val_det_f1": 2.0 * n_tp / denominator if denominator else nan,
            "val_det_recall": n_tp / n_gt if n_gt else nan,
            "val_det_precision": n_tp / n_det if n_det else nan,
            "val_det_loss": float(np.mean(losses)) if losses else nan,
            "val_det_instances": float(n_gt),
            "val_det_detections": float(n_det),
        }


def _like_model_layout(model: nn.Module, x: Tensor) -> Tensor:
    """`x` in channels-last memory when the model's convolutions are (bf16, or on a CPU)."""
    for p in model.parameters():
        if p.ndim == 4:
            if p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
                return x.contiguous(memory_format=torch.channels_last)
            break
    return x


class VerifierTask:
    """Box-verifier training (`models.verifier_net.VerifierNet`): crop classification.

    Items of `train.verification.VerifierDataset` hold N crops each; a batch's (B, N, ...)
    crops are flattened to (B N, ...) and the loss is the cross-entropy (label smoothing
    `label_smoothing`) over the valid ones. Validation (argmax class of every valid crop):

    - ``val_verify_accuracy``: crops given their own label;
    - ``val_verify_object_recall``: object crops given their own class;
    - ``val_verify_bg_recall`` / ``val_verify_bg_precision``: background crops called
      background / crops called background that are;
    - ``val_verify_balanced_accuracy`` (the checkpoint selection metric): the mean of the object
      recall and the background recall (the crops are about half each, but not exactly);
    - ``val_verify_det_object_recall`` / ``val_verify_det_bg_recall``: the same on the detector's
      candidates alone (the boxes serving re-scores; NaN without ``--hard-negatives``);
    - ``val_verify_loss``, ``val_verify_crops``, ``val_verify_object_crops``.

    Args:
        object_ids: the verifier's classes, in output order (column 1 + o).
        label_smoothing: of the cross-entropy.
    """

    name = "verify"
    primary_metric = "val_verify_balanced_accuracy"
    maximize = True

    def __init__(self, object_ids: Sequence[str], label_smoothing: float = 0.05) -> None:
        self.object_ids = tuple(str(i) for i in object_ids)
        self.label_smoothing = float(label_smoothing)

    @staticmethod
    def flatten(batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """(crops (B N, 3, S, S), labels (B N,), valid (B N,)) of a batch."""
        crops = batch["crops"]
        return crops.flatten(0, 1), batch["labels"].flatten(), batch["valid"].flatten()

    def loss(
        self, model: nn.Module, batch: Mapping[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy over the valid crops; parts: ``ce``, ``accuracy``, ``bg_share``."""
        crops, labels, valid = self.flatten(batch)
        logits = model(_like_model_layout(model, crops)).float()
        if not bool(valid.any()):
            total = logits.sum() * 0.0
            return total, {"total": 0.0, "ce": 0.0, "accuracy": float("nan"),
                           "bg_share": float("nan")}
        logits, labels = logits[valid], labels[valid]
        total = nn.functional.cross_entropy(logits, labels,
                                            label_smoothing=self.label_smoothing)
        acc = float((logits.detach().argmax(1) == labels).double().mean())
        return total, {"total": float(total.detach()), "ce": float(total.detach()),
                       "accuracy": acc, "bg_share": float((labels == 0).double().mean())}

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Iterator[Mapping[str, Tensor]]
    ) -> dict[str, float]:
        """The metrics of the class docstring, pooled over the validation crops."""
        from dvc_perception.train.verification import SOURCE_DETECTOR

        preds, labels, sources, losses = [], [], [], []
        was_training = model.training
        model.eval()
        device = model_device(model)
        for batch in loader:
            crops, lab, valid = self.flatten(batch)
            if not bool(valid.any()):
                continue
            logits = model(_like_model_layout(model, crops[valid].to(device))).float().cpu()
            losses.append(float(nn.functional.cross_entropy(
                logits, lab[valid], label_smoothing=self.label_smoothing, reduction="sum")))
            preds.append(logits.argmax(1))
            labels.append(lab[valid])
            sources.append(batch["source"].flatten()[valid])
        model.train(was_training)
        nan = float("nan")
        if not preds:
            return {"val_verify_balanced_accuracy": nan, "val_verify_accuracy": nan,
                    "val_verify_crops": 0.0}
        p, y, s = torch.cat(preds), torch.cat(labels), torch.cat(sources)

        def share(hit: Tensor, of: Tensor) -> float:
            n = int(of.sum())
            return float((hit & of).sum()) / n if n else nan

        right = p == y
        obj, bg = y > 0, y == 0
        det = s == SOURCE_DETECTOR
        obj_recall, bg_recall = share(right, obj), share(right, bg)
        return {
            "val_verify_balanced_accuracy": 0.5 * (obj_recall + bg_recall),
            "val_verify_accuracy": float(right.double().mean()),
            "val_verify_object_recall": obj_recall,
            "val_verify_bg_recall": bg_recall,
            "val_verify_bg_precision": share(bg, p == 0),
            "val_verify_det_object_recall": share(right, obj & det),
            "val_verify_det_bg_recall": share(right, bg & det),
            "val_verify_loss": sum(losses) / int(y.numel()),
            "val_verify_crops": float(y.numel()),
            "val_verify_object_crops": float(obj.sum()),
        }

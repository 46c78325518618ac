# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Score a replayed bag against the ground truth in the input bag.

Ground truth: ``/ground_truth/<object_id>/pose`` (PoseStamped) and/or a depth topic
(``/camera/depth/ground_truth`` by default; 32FC1 m or 16UC1 mm, REP 118), as written by
`dvc-perception synth --bag` and `bop2bag`, or a real RGB-D recording's depth registered to the
colour camera. A bag with depth and no pose ground truth is scored on depth alone (no objects).
Estimates: ``<node>/<object_id>/pose`` (PoseWithCovarianceStamped), ``<node>/depth/image_raw``
(with multiview depth also ``<node>/depth/confidence``, 32FC1 in [0, 1]), and the replay's
``<node>/frame_timings`` / ``<node>/frame_errors``. Frames are matched by header stamp; when
fewer than `DEFAULT_MIN_GT_MATCH` of the output frames (``<node>/poses`` and
``<node>/frame_errors`` messages) have a ground-truth stamp, the bags do not belong together and
evaluation refuses (``min_gt_match`` lowers the bar).

Per object: ADD, or ADD-S for objects with symmetries in their description YAML (Hinterstoisser
et al. 2012), recall at 0.1 diameter with missed detections counted as failures, and rotation /
translation error distributions of the detections. Depth, over the ground truth's valid pixels
(finite, > 0) where the prediction is finite, pooled over frames: AbsRel, RMSE, delta < 1.25,
AbsRel after per-frame median scaling (monocular models), and the density = scored pixels /
ground-truth valid pixels, where output frames without a depth image count as predicting none;
with a confidence topic also the mean confidence of the scored frames' predicted pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.bag.io import BagReader, deserialize
from dvc_perception.errors import BagError, ConfigError
from dvc_perception.synth.synth_bag import DEPTH_TOPIC, GROUND_TRUTH_PREFIX

MAX_MODEL_POINTS = 2000
#: Fraction of the output frames that must have a ground-truth stamp.
DEFAULT_MIN_GT_MATCH = 0.5


@dataclass
class ObjectEval:
    """Per-frame errors of one object (NaN where it was not detected)."""

    object_id: str
    diameter_m: float | None
    symmetric: bool
    stamps_ns: list[int] = field(default_factory=list)
    add_m: list[float] = field(default_factory=list)
    rot_deg: list[float] = field(default_factory=list)
    trans_m: list[float] = field(default_factory=list)
    est: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)
    gt: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: every estimate of the object by stamp [ns], frames without ground truth included
    all_estimates: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready statistics."""
        add = np.asarray(self.add_m, dtype=np.float64)
        rot = np.asarray(self.rot_deg, dtype=np.float64)
        trans = np.asarray(self.trans_m, dtype=np.float64)
        detected = ~np.isnan(rot)
        out: dict[str, Any] = {
            "frames_with_gt": len(self.stamps_ns),
            "detected": int(detected.sum()),
            "metric": "ADD-S" if self.symmetric else "ADD",
            "diameter_m": self.diameter_m,
        }
        if self.diameter_m is not None and add.size:
            ok = np.nan_to_num(add, nan=np.inf) <= 0.1 * self.diameter_m
            out["recall_0.1d"] = float(ok.mean())
            out["median_add_m"] = _nanmedian(add)
        for name, values in (("rotation_error_deg", rot), ("translation_error_m", trans)):
            v = values[~np.isnan(values)]
            out[name] = (
                {"median": float(np.median(v)), "mean": float(v.mean()),
                 "p90": float(np.percentile(v, 90)), "max": float(v.max())}
                if v.size else None
            )  # fmt: skip
        return out


@dataclass
class EvalResult:
    """Everything `evaluate_bag` measured; `summary()` is the JSON written next to the report."""

    frames: int
    frames_with_errors: int
    objects: dict[str, ObjectEval]
    #: abs_rel, rmse_m, delta_1_25, abs_rel_median_scaled, density, frames, pixels, ...
    #: (mean_confidence with a confidence topic); None without depth ground truth or predictions
    depth: dict[str, float] | None
    #: (stamp ns, predicted (H, W) m, ground truth (H, W) m, confidence (H, W) in [0, 1] or
    #: None without a confidence topic) of a few frames, for the report
    depth_samples: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]]
    latency_ms: dict[str, list[float]]
    frames_matched_gt: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary."""
        lat = {
            k: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95)),
                "mean": float(np.mean(v)), "n": len(v)}
            for k, v in sorted(self.latency_ms.items()) if v
        }  # fmt: skip
        return {
            "frames": self.frames,
            "frames_with_errors": self.frames_with_errors,
            "frames_matched_gt": self.frames_matched_gt,
            "objects": {k: o.summary() for k, o in sorted(self.objects.items())},
            "depth": self.depth,
            "latency_ms": lat,
        }


def _nanmedian(x: np.ndarray) -> float | None:
    v = x[~np.isnan(x)]
    return float(np.median(v)) if v.size else None


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _image_to_depth(msg: Any, bag: str | Path, topic: str) -> np.ndarray:
    from dvc_perception.errors import InputError
    from dvc_perception.ros.convert import depth_image_msg_to_array

    try:
        return depth_image_msg_to_array(msg)
    except InputError as err:
        raise BagError(f"{bag}: {topic} at stamp {_stamp_ns(msg.header.stamp)} ns: {err}") from err


def _object_model(object_id: str, data_root: str | Path | None) -> tuple[Any, float, bool] | None:
    """(model points (M,3) m, diameter m, symmetric) from the object's YAML.

    None when no description of `object_id` exists (its poses are then scored by rotation and
    translation only, and the summary's ``diameter_m`` is null); a description that exists but
    does not load raises its typed error.
    """
    from dvc_perception.render.objects import find_object_yaml, load_object

    try:
        path = find_object_yaml(object_id)
    except ConfigError:
        return None
    obj = load_object(path, data_root=data_root)
    pts = obj.mesh.vertices.detach().cpu().numpy().astype(np.float64)
    if len(pts) > MAX_MODEL_POINTS:
        pts = pts[np.linspace(0, len(pts) - 1, MAX_MODEL_POINTS).round().astype(int)]
    return pts, float(obj.diameter_m), obj.symmetric


def _ground_truth_topics(reader: BagReader) -> list[str]:
    """The bag's ``/ground_truth/<object_id>/pose`` (PoseStamped) topics, sorted."""
    return sorted(
        t for t, info in reader.topics().items()
        if t.startswith(GROUND_TRUTH_PREFIX) and t.endswith("/pose")
        and info.msgtype == "geometry_msgs/msg/PoseStamped"
    )  # fmt: skip


def _ground_truth_poses(reader: BagReader, topics: list[str], bag: str | Path
                        ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Object id -> header stamp [ns] -> (R (3, 3), t (3,) m) of the ground-truth `topics`."""
    from geometry_msgs.msg import PoseStamped

    from dvc_perception.ros.convert import msg_to_pose

    return {
        topic[len(GROUND_TRUTH_PREFIX) : -len("/pose")]: {
            _stamp_ns(msg.header.stamp): msg_to_pose(msg.pose)
            for m in reader.messages([topic])
            for msg in [deserialize(m, PoseStamped, bag=bag)]
        }
        for topic in topics
    }


def read_ground_truth_poses(bag: str | Path
                            ) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Object id -> stamp [ns] -> (R, t) of a bag's ``/ground_truth/<object_id>/pose`` topics.

    Raises:
        BagError: an unreadable bag or message.
    """
    with BagReader(bag) as reader:
        return _ground_truth_poses(reader, _ground_truth_topics(reader), bag)


def evaluate_bag(
    output_bag: str | Path,
    gt_bag: str | Path,
    *,
    node_name: str = "/perception_node",
    data_root: str | Path | None = None,
    gt_depth_topic: str = DEPTH_TOPIC,
    max_depth_samples: int = 4,
    min_gt_match: float = DEFAULT_MIN_GT_MATCH,
) -> EvalResult:
    """Match estimates to ground truth by stamp and compute the metrics.

    Args:
        output_bag: the replay's output bag.
        gt_bag: the input bag with ``/ground_truth/...`` topics and/or `gt_depth_topic`.
        node_name: fully qualified node name the outputs were published under.
        data_root: root of object meshes referenced by ``${DVC_SHARED_DATA}`` in object YAMLs.
        gt_depth_topic: ground-truth depth topic in `gt_bag` (32FC1 m or 16UC1 mm), registered
            to the camera: the size and ``frame_id`` of the images the node saw.
        max_depth_samples: depth frames kept for the report's error maps.
        min_gt_match: fraction of the output frames that must have a ground-truth stamp.

    Raises:
        BagError: unreadable bags, `gt_bag` has neither ground-truth pose topics nor
            `gt_depth_topic`, only depth ground truth and `output_bag` no depth, `output_bag`
            has no frames of `node_name`, or fewer than `min_gt_match` of them match ground
            truth; depth ground truth that is not registered to the predicted depth (another
            size or ``frame_id``) or not a depth encoding.
    """
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from sensor_msgs.msg import Image

    from dvc_perception.geometry.metrics import (
        add_error,
        adds_error,
        rotation_error_deg,
        translation_error,
    )
    from dvc_perception.ros.convert import msg_to_pose

    node = node_name.rstrip("/")
    with BagReader(gt_bag) as gt_reader:
        gt_topics = gt_reader.topics()
        pose_topics = _ground_truth_topics(gt_reader)
        if not pose_topics and gt_depth_topic not in gt_topics:
            raise BagError(f"{gt_bag} has no {GROUND_TRUTH_PREFIX}<object_id>/pose topics and "
                           f"no depth ground truth {gt_depth_topic} to evaluate with")
        gt_poses = _ground_truth_poses(gt_reader, pose_topics, gt_bag)
        gt_depth: dict[int, np.ndarray] = {}
        gt_depth_frames: dict[int, str] = {}
        if gt_depth_topic in gt_topics:
            for m in gt_reader.messages([gt_depth_topic]):
                msg = deserialize(m, Image, bag=gt_bag)
                stamp = _stamp_ns(msg.header.stamp)
                gt_depth[stamp] = _image_to_depth(msg, gt_bag, gt_depth_topic)
                gt_depth_frames[stamp] = msg.header.frame_id

    with BagReader(output_bag) as out_reader:
        out_topics = out_reader.topics()
        frames = out_topics.get(f"{node}/poses")
        errors = out_topics.get(f"{node}/frame_errors")
        gt_stamps = {s for gts in gt_poses.values() for s in gts} | set(gt_depth)
        out_stamps = _output_frame_stamps(out_reader, node)
        matched = _check_gt_match(out_stamps, gt_stamps, min_gt_match,
                                  (output_bag, gt_bag))  # fmt: skip
        est: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
        for object_id in gt_poses:
            topic = f"{node}/{object_id}/pose"
            est[object_id] = {} if topic not in out_topics else {
                _stamp_ns(msg.header.stamp): msg_to_pose(msg.pose.pose)
                for m in out_reader.messages([topic])
                for msg in [deserialize(m, PoseWithCovarianceStamped, bag=output_bag)]
            }  # fmt: skip
        latency: dict[str, list[float]] = {}
        if f"{node}/frame_timings" in out_topics:
            from diagnostic_msgs.msg import DiagnosticArray

            for m in out_reader.messages([f"{node}/frame_timings"]):
                for kv in deserialize(m, DiagnosticArray, bag=output_bag).status[0].values:
                    latency.setdefault(kv.key, []).append(float(kv.value))
        depth_preds: dict[int, np.ndarray] = {}
        confidences: dict[int, np.ndarray] = {}
        depth_topic = f"{node}/depth/image_raw"
        confidence_topic = f"{node}/depth/confidence"
        if gt_depth and depth_topic not in out_topics and f"{node}/depth" in out_topics:
            raise BagError(f"{output_bag} has {node}/depth, the name before {depth_topic}: "
                           "replay the input bag again to score depth")
        if gt_depth and not gt_poses and depth_topic not in out_topics:
            raise BagError(
                f"{gt_bag} has only depth ground truth ({gt_depth_topic}) and {output_bag} has "
                f"no {depth_topic} to score: replay with a depth source "
                "(--param pipeline.depth_source:=network, or multiview, which publishes no "
                "depth for frames without camera motion or a camera pose)"
            )
        if gt_depth and depth_topic in out_topics:
            for m in out_reader.messages([depth_topic]):
                msg = deserialize(m, Image, bag=output_bag)
                stamp = _stamp_ns(msg.header.stamp)
                depth_preds[stamp] = _image_to_depth(msg, output_bag, depth_topic)
                if stamp in gt_depth:
                    _check_registered(gt_depth[stamp], gt_depth_frames[stamp],
                                      depth_preds[stamp], msg.header.frame_id, stamp,
                                      gt_depth_topic)  # fmt: skip
        if gt_depth and confidence_topic in out_topics:
            for m in out_reader.messages([confidence_topic]):
                msg = deserialize(m, Image, bag=output_bag)
                stamp = _stamp_ns(msg.header.stamp)
                conf = _image_to_depth(msg, output_bag, confidence_topic)
                pred = depth_preds.get(stamp)
                if pred is not None and conf.shape != pred.shape:
                    raise BagError(f"{output_bag}: {confidence_topic} at stamp {stamp} ns is "
                                   f"{conf.shape[1]}x{conf.shape[0]}, the depth "
                                   f"{pred.shape[1]}x{pred.shape[0]}")  # fmt: skip
                confidences[stamp] = conf

    objects: dict[str, ObjectEval] = {}
    for object_id, gts in gt_poses.items():
        model = _object_model(object_id, data_root)
        ev = ObjectEval(object_id, model[1] if model else None, bool(model and model[2]),
                        all_estimates=est[object_id])
        for stamp, (R_gt, t_gt) in sorted(gts.items()):
            ev.stamps_ns.append(stamp)
            ev.gt.append((R_gt, t_gt))
            pose = est[object_id].get(stamp)
            ev.est.append(pose)
            if pose is None:
                ev.add_m.append(float("nan"))
                ev.rot_deg.append(float("nan"))
                ev.trans_m.append(float("nan"))
                continue
            R, t = pose
            ev.rot_deg.append(float(rotation_error_deg(R[None], R_gt[None])[0]))
            ev.trans_m.append(float(translation_error(t[None], t_gt[None])[0]))
            if model is None:
                ev.add_m.append(float("nan"))
            else:
                fn = adds_error if ev.symmetric else add_error
                ev.add_m.append(float(fn(R[None], t[None], R_gt[None], t_gt[None], model[0])[0]))
        objects[object_id] = ev

    depth_summary = None
    samples: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None]] = []
    common = sorted(set(depth_preds) & set(gt_depth))
    if common:
        # output frames with depth ground truth but no depth image (frame errors) predict no
        # pixel: they lower the density, not the errors
        unpredicted = (set(out_stamps) & set(gt_depth)) - set(depth_preds)
        depth_summary = _depth_summary(
            np.stack([depth_preds[s] for s in common]), np.stack([gt_depth[s] for s in common]),
            [gt_depth[s] for s in sorted(unpredicted)],
        )
        scored = [confidences[s][np.isfinite(depth_preds[s])] for s in common if s in confidences]
        values = np.concatenate(scored) if scored else np.empty(0, np.float32)
        values = values[np.isfinite(values)]
        if values.size:
            depth_summary["mean_confidence"] = float(values.mean())
        step = max(1, len(common) // max(1, max_depth_samples))
        samples = [(s, depth_preds[s], gt_depth[s], confidences.get(s))
                   for s in common[::step][:max_depth_samples]]
    n_frames = (frames.count if frames else 0) + (errors.count if errors else 0)
    return EvalResult(
        frames=n_frames,
        frames_with_errors=errors.count if errors else 0,
        objects=objects,
        depth=depth_summary,
        depth_samples=samples,
        latency_ms=latency,
        frames_matched_gt=matched,
    )


def _depth_summary(
    preds: np.ndarray, gts: np.ndarray, unpredicted_gts: list[np.ndarray]
) -> dict[str, float]:
    """Pooled depth metrics of (F, H, W) predictions against their ground truth [m].

    `unpredicted_gts`: ground truth of output frames without a depth image (density only).
    """
    from dvc_perception.geometry.metrics import depth_metrics, median_scale_depth

    m = depth_metrics(preds, gts)
    scaled = depth_metrics(median_scale_depth(preds, gts), gts)
    n_gt = m["n_gt"] + sum(int(np.sum(np.isfinite(g) & (g > 0))) for g in unpredicted_gts)
    return {
        "abs_rel": float(m["abs_rel"]),
        "rmse_m": float(m["rmse"]),
        "delta_1_25": float(m["delta_1_25"]),
        "abs_rel_median_scaled": float(scaled["abs_rel"]),
        "density": m["n"] / n_gt if n_gt else float("nan"),
        "frames": len(preds),
        "frames_without_depth": len(unpredicted_gts),
        "pixels": int(m["n"]),
        "pixels_gt": n_gt,
    }


def _check_registered(gt: np.ndarray, gt_frame: str, pred: np.ndarray, pred_frame: str,
                      stamp: int, topic: str) -> None:  # fmt: skip
    """Raise `BagError` unless ground truth and prediction share the image grid and frame."""
    if gt.shape != pred.shape or (gt_frame and pred_frame and gt_frame != pred_frame):
        raise BagError(
            f"depth ground truth {topic} at stamp {stamp} ns is {gt.shape[1]}x{gt.shape[0]} "
            f"in frame {gt_frame!r}, the predicted depth {pred.shape[1]}x{pred.shape[0]} in "
            f"frame {pred_frame!r}: ground truth must be registered to the camera image (e.g. "
            "a driver's aligned_depth_to_color topic)"
        )


def _output_frame_stamps(reader: BagReader, node: str) -> list[int]:
    """Header stamps [ns] of the replay's frames: ``<node>/poses`` and ``<node>/frame_errors``."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray

    topics = reader.topics()
    stamps = []
    for topic, cls in ((f"{node}/poses", PoseArray), (f"{node}/frame_errors", DiagnosticArray)):
        if topic in topics:
            for k, m in enumerate(reader.messages([topic])):
                stamps.append(_stamp_ns(deserialize(m, cls, k, reader.path).header.stamp))
    if not stamps:
        raise BagError(
            f"{reader.path} has no {node}/poses or {node}/frame_errors messages: not the output "
            f"of a replay of node {node} (--node)? It has topics {sorted(topics)}"
        )
    return stamps


def _check_gt_match(
    out_stamps: list[int], gt_stamps: set[int], min_match: float, bags: tuple[Any, Any]
) -> int:
    """How many output frames have a ground-truth stamp; raises below `min_match` of them."""
    matched = sum(s in gt_stamps for s in out_stamps)
    if matched >= min_match * len(out_stamps):
        return matched
    example = next(s for s in out_stamps if s not in gt_stamps)
    nearest = min(gt_stamps, key=lambda g: abs(g - example)) if gt_stamps else None
    raise BagError(
        f"only {matched} of {len(out_stamps)} output frames of {bags[0]} have a ground-truth "
        f"stamp in {bags[1]} ({len(gt_stamps)} ground-truth stamps; at least "
        f"{100 * min_match:g} % needed, --min-gt-match): e.g. output stamp {example} ns, "
        f"nearest ground-truth stamp {nearest} ns. Were the outputs replayed from this bag?"
    )


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few human-readable lines of the headline numbers."""
    lines = [f"frames: {summary['frames']} ({summary['frames_with_errors']} with errors"
             + (f", {summary['frames_matched_gt']} with ground truth"
                if "frames_matched_gt" in summary else "") + ")"]  # fmt: skip
    for object_id, o in summary["objects"].items():
        rot, trans = o["rotation_error_deg"], o["translation_error_m"]
        recall = o.get("recall_0.1d")
        lines.append(
            f"{object_id}: detected {o['detected']}/{o['frames_with_gt']}"
            + (f", {o['metric']}@0.1d recall {100 * recall:.1f} %" if recall is not None else "")
            + (f", median rot {rot['median']:.2f} deg" if rot else "")
            + (f", median trans {100 * trans['median']:.2f} cm" if trans else "")
        )
    if summary.get("depth"):
        d = summary["depth"]
        lines.append(
            f"depth: AbsRel {d['abs_rel']:.4f} (median-scaled {d['abs_rel_median_scaled']:.4f}), "
            f"RMSE {d['rmse_m']:.4f} m, delta<1.25 {100 * d['delta_1_25']:.1f} %, density "
            f"{100 * d['density']:.1f} % over {d['frames']} frames"
            + (f", mean confidence {d['mean_confidence']:.3f}" if "mean_confidence" in d else "")
        )
    for stage, s in summary.get("latency_ms", {}).items():
        lines.append(f"latency {stage}: p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms")
    return "\n".join(lines)

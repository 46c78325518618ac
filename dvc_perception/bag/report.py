# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The evaluation report: ``summary.json``, PNG figures and an ``index.html`` that shows them.

Figures: estimated (green) and ground-truth (red) poses drawn on input frames as projected
bounding boxes and axes, error histograms per object, depth error maps (with the depth's
confidence when the replay wrote one: multiview depth), and latency.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from dvc_perception.bag.evaluate import EvalResult, format_summary
from dvc_perception.bag.io import BagReader
from dvc_perception.geometry.camera import CameraModel
from dvc_perception.pipeline.overlay import draw_axes, draw_box


def _frames_by_stamp(gt_bag: Path, stamps: set[int]) -> dict[int, tuple[np.ndarray, CameraModel]]:
    """RGB frame and camera model (camera_info, lens included) of the requested stamps."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    from dvc_perception.bag.replay import detect_camera_topics
    from dvc_perception.ros.convert import (
        camera_info_to_camera_model,
        compressed_msg_to_rgb,
        image_msg_to_rgb,
    )

    out: dict[int, tuple[np.ndarray, CameraModel]] = {}
    with BagReader(gt_bag) as reader:
        topics = reader.topics()
        image_topic, info_topic = detect_camera_topics(topics)
        Ks = {}
        for m in reader.messages([info_topic]):
            info = deserialize_message(m.rawdata, CameraInfo)
            Ks[_stamp(info.header.stamp)] = camera_info_to_camera_model(info, rectified=False)
        compressed = topics[image_topic].msgtype.endswith("CompressedImage")
        for m in reader.messages([image_topic]):
            msg = deserialize_message(m.rawdata, CompressedImage if compressed else Image)
            s = _stamp(msg.header.stamp)
            if s in stamps and s in Ks:
                rgb = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
                out[s] = (np.ascontiguousarray(rgb), Ks[s])
    return out


def _stamp(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def write_report(
    result: EvalResult, out_dir: str | Path, *, gt_bag: str | Path | None = None,
    max_overlays: int = 6,
) -> Path:  # fmt: skip
    """Write summary.json, the figures and index.html into `out_dir`; returns index.html."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    figures: list[tuple[str, str]] = []

    # error histograms
    objs = [o for o in result.objects.values() if o.stamps_ns]
    if objs:
        fig, axes = plt.subplots(len(objs), 3, figsize=(12, 3 * len(objs)), squeeze=False)
        for row, o in zip(axes, objs):
            for ax, values, label, scale in (
                (row[0], o.rot_deg, "rotation error [deg]", 1.0),
                (row[1], o.trans_m, "translation error [cm]", 100.0),
                (row[2], o.add_m, f"{'ADD-S' if o.symmetric else 'ADD'} / diameter", None),
            ):
                v = np.asarray(values, dtype=np.float64)
                v = v[~np.isnan(v)]
                if scale is None:
                    if not o.diameter_m:
                        ax.set_axis_off()
                        continue
                    v = v / o.diameter_m
                    ax.axvline(0.1, color="r", ls="--", label="0.1 d")
                    ax.legend()
                else:
                    v = v * scale
                ax.hist(v, bins=20, color="tab:blue")
                ax.set_title(f"{o.object_id}: {label} (n={v.size})", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "errors.png", dpi=80)
        plt.close(fig)
        figures.append(("errors.png", "Pose error distributions (detections only)"))

    # overlays
    if gt_bag is not None and objs:
        stamps = sorted({s for o in objs for s in o.stamps_ns})
        pick = stamps[:: max(1, len(stamps) // max_overlays)][:max_overlays]
        frames = _frames_by_stamp(Path(gt_bag), set(pick))
        for k, s in enumerate(pick):
            if s not in frames:
                continue
            rgb, camera = frames[s]
            img = rgb.copy()
            for o in objs:
                if s not in o.stamps_ns:
                    continue
                i = o.stamps_ns.index(s)
                half = np.full(3, 0.5 * (o.diameter_m or 0.1) / np.sqrt(3))
                for pose, colour in ((o.gt[i], (255, 0, 0)), (o.est[i], (0, 255, 0))):
                    if pose is not None:
                        draw_box(img, camera, *pose, half, colour)
                        draw_axes(img, camera, *pose, 1.5 * float(half[0]))
            name = f"overlay_{k:02d}.png"
            cv2.imwrite(str(out / name), img[:, :, ::-1])
            figures.append((name, f"stamp {s} ns: estimate green, ground truth red"))

    # depth error maps (and the multiview depth's confidence when the bag has it)
    for k, (s, pred, gt, confidence) in enumerate(result.depth_samples):
        panels_n = 3 if confidence is None else 4
        fig, axes = plt.subplots(1, panels_n, figsize=(13 * panels_n / 3, 3.4))
        vmax = float(np.nanpercentile(gt, 99)) if np.isfinite(gt).any() else 1.0
        panels = ((axes[0], pred, "predicted [m]"), (axes[1], gt, "ground truth [m]"))
        for ax, img, title in panels:
            im = ax.imshow(img, vmin=0, vmax=vmax, cmap="viridis")
            ax.set_title(title)
            fig.colorbar(im, ax=ax)
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(pred - gt) / gt
        im = axes[2].imshow(rel, vmin=0, vmax=0.25, cmap="magma")
        axes[2].set_title("|pred - gt| / gt")
        fig.colorbar(im, ax=axes[2])
        if confidence is not None:
            im = axes[3].imshow(confidence, vmin=0, vmax=1, cmap="viridis")
            axes[3].set_title("confidence")
            fig.colorbar(im, ax=axes[3])
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        name = f"depth_{k:02d}.png"
        fig.savefig(out / name, dpi=70)
        plt.close(fig)
        figures.append((name, f"depth at stamp {s} ns"
                        + ("" if confidence is None else " (with its confidence, 0..1)")))

    # latency
    if result.latency_ms:
        keys = [k for k in sorted(result.latency_ms) if k.endswith("_ms")]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.boxplot([result.latency_ms[k] for k in keys], showfliers=False)
        ax.set_xticks(range(1, len(keys) + 1), keys, rotation=30, fontsize=8)
        ax.set_ylabel("ms")
        ax.set_title("per-frame timings (replay, this machine)")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=80)
        plt.close(fig)
        figures.append(("latency.png", "Per-stage timings"))

    body = [
        "<html><head><meta charset='utf-8'><title>dvc_perception evaluation</title></head><body>",
        "<h1>dvc_perception evaluation</h1>",
        f"<pre>{html.escape(format_summary(summary))}</pre>",
    ]
    for name, caption in figures:
        body.append(f"<figure><img src='{name}'><figcaption>{html.escape(caption)}</figcaption>"
                    "</figure>")  # fmt: skip
    body.append("<p>Full numbers: <a href='summary.json'>summary.json</a></p></body></html>")
    index = out / "index.html"
    index.write_text("\n".join(body))
    return index

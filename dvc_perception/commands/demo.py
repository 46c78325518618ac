# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception demo`: chessboard poses by the batched PnP layer, next to OpenCV's.

Detects the 9x6 inner corners in ``../shared/data/chessboard/left*.jpg`` (or ``--images``),
removes the lens distortion of ``intrinsics.yml`` (M1/D1) with `CameraModel`, solves every view
in one batched `solve_pnp` call and with OpenCV's ``solvePnP`` (SQPNP, then ITERATIVE), and
prints both poses, both reprojection errors and the timings. Without the image folder it renders
views of a board from known poses and detects those instead. The work lives in
`dvc_perception.demo.chessboard`; this module only parses, calls and prints.

Then the main job on the embedded default: generated sample bags with ground truth go through
the node's own per-frame code (`dvc-perception replay`), are scored (`dvc-perception eval`) and
reported (HTML + PNG): a camera circling the default board with the fiducial keypoint source
(no networks) into ``--out/board``, and a camera swinging around the demo object on a table
with the shipped pose and depth networks into ``--out/demo_object``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dvc_perception.errors import ConfigError

# solve_pnp's RMS may exceed OpenCV's by this much before the demo reports a failure, px.
RMS_TOLERANCE_PX = 0.01


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `dvc-perception demo`."""
    parser.add_argument("--images", type=Path, default=None,
                        help="folder of chessboard images (default: ../shared/data/chessboard; "
                             "generated views when that is absent)")
    parser.add_argument("--glob", default="left*.jpg", help="image file pattern in --images")
    parser.add_argument("--intrinsics", type=Path, default=None,
                        help="OpenCV calibration file with M1/D1 (default: intrinsics.yml "
                             "in the image folder)")
    parser.add_argument("--generated", action="store_true",
                        help="use generated views of a board even if images are present")
    parser.add_argument("--views", type=int, default=4,
                        help="number of generated views (default: 4)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 gives steadier "
                             "timings on a busy machine")
    parser.add_argument("--repeats", type=int, default=3,
                        help="warm solve_pnp calls to time after the first (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="where the pipeline stage writes bags, summary and report")
    parser.add_argument("--frames", type=int, default=30,
                        help="frames in the generated board bag (default: 30)")
    parser.add_argument("--object-frames", type=int, default=60,
                        help="frames in the generated demo-object bag (default: 60)")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="only the PnP comparison, not the bag -> node -> eval stage")


def _fmt(v: np.ndarray, digits: int) -> str:
    return "(" + ", ".join(f"{x:{digits + 4}.{digits}f}" for x in v) + ")"


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every pose is valid and within 0.01 px of OpenCV's RMS."""
    import torch

    from dvc_perception.demo.chessboard import (
        ChessboardSpec,
        choose_board_views,
        compare_board_poses,
    )
    from dvc_perception.geometry.metrics import rotation_error_deg, translation_error
    from dvc_perception.geometry.so3 import rotvec_to_matrix

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: expected >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)  # process-wide: this command owns the process
    spec = ChessboardSpec(cols=9, rows=6, square=1.0)
    views = choose_board_views(spec, images=args.images, glob=args.glob,
                               intrinsics=args.intrinsics, generated=args.generated,
                               n_generated=args.views)
    for message in views.skipped:
        print(f"skipped: {message}")
    names, corners, camera, truth, source = (views.names, views.corners, views.camera,
                                             views.truth, views.source)

    if args.repeats < 0:
        raise ConfigError(f"--repeats: expected >= 0, got {args.repeats}")
    cmp = compare_board_poses(names, np.stack(corners), camera, spec, repeats=args.repeats)

    print(f"dvc-perception demo: chessboard poses, {spec.cols}x{spec.rows} inner corners, "
          "unit squares (t in squares)")
    print(f"source: {source}")
    print(f"camera: {camera.distortion_model} {camera.width}x{camera.height} fx={camera.fx:.2f} "
          f"fy={camera.fy:.2f} cx={camera.cx:.2f} cy={camera.cy:.2f}; corners undistorted by "
          "CameraModel, both solvers use K without distortion, RMS in the undistorted image")
    print()
    header = (f"{'view':<14}{'solver':<11}{'rvec [rad]':<36}{'t [squares]':<33}"
              f"{'RMS [px]':>9}  {'d_rot [deg]':>11}  {'d_t':>8}")
    print(header)
    print("-" * len(header))
    for b, name in enumerate(cmp.names):
        print(f"{name:<14}{'solve_pnp':<11}{_fmt(cmp.rvec[b], 5):<36}{_fmt(cmp.t[b], 4):<33}"
              f"{cmp.rms_px[b]:9.4f}  {cmp.rot_diff_deg[b]:11.2e}  {cmp.t_diff[b]:8.1e}")
        print(f"{'':<14}{'opencv':<11}{_fmt(cmp.rvec_cv[b], 5):<36}{_fmt(cmp.t_cv[b], 4):<33}"
              f"{cmp.rms_cv_px[b]:9.4f}")
    print()
    worst = float(np.max(cmp.rms_px - cmp.rms_cv_px))
    b = len(cmp.names)
    print(f"views: {b}; max RMS(solve_pnp) - RMS(opencv) = {worst:+.2e} px; "
          f"max rotation difference {cmp.rot_diff_deg.max():.2e} deg; "
          f"valid {int(cmp.valid.sum())}/{b}, converged {int(cmp.converged.sum())}/{b}")
    print(f"timing: solve_pnp batched B={b}: first call {cmp.solve_ms:.2f} ms, warm "
          f"{cmp.solve_warm_ms:.2f} ms (median of {args.repeats}); OpenCV SQPNP+ITERATIVE loop "
          f"{cmp.opencv_ms:.2f} ms; torch threads {torch.get_num_threads()}")
    if truth is not None:
        rot = rotation_error_deg(rotvec_to_matrix(torch.from_numpy(cmp.rvec)), truth[0])
        trans = translation_error(torch.from_numpy(cmp.t), truth[1])
        print(f"ground truth (generated views): max rotation error {float(rot.max()):.3f} deg, "
              f"max translation error {float(trans.max()):.4f} squares")
    if worst > RMS_TOLERANCE_PX or not bool(cmp.valid.all()):
        print(f"FAILED: solve_pnp is more than {RMS_TOLERANCE_PX} px worse than OpenCV "
              "or returned an invalid pose")
        return 1
    print(f"OK: solve_pnp matches OpenCV's reprojection RMS within {RMS_TOLERANCE_PX} px")
    if args.skip_pipeline:
        return 0
    return _pipeline_stage(args)


def _pipeline_stage(args: argparse.Namespace) -> int:
    """Sample bags -> node code -> eval -> report; 0 when every frame was processed."""
    from dvc_perception.bag.evaluate import format_summary
    from dvc_perception.demo.samples import run_board_sample_job, run_demo_object_sample_job

    if args.frames < 1 or args.object_frames < 1:
        raise ConfigError(f"--frames/--object-frames: expected >= 1, got {args.frames}, "
                          f"{args.object_frames}")
    print()
    print(f"dvc-perception demo: board bag ({args.frames} frames, camera circling the default "
          "board) -> perception_node code (fiducial source) -> eval -> report")
    board_summary, board_index = run_board_sample_job(args.out / "board", n_frames=args.frames)
    print(format_summary(board_summary))
    print(f"report: {board_index}")
    board = board_summary["objects"]["board"]
    failed = bool(board_summary["frames_with_errors"]) or board["detected"] < board[
        "frames_with_gt"]
    if failed:
        print("FAILED: some board frames gave no pose")

    print()
    print(f"dvc-perception demo: demo-object bag ({args.object_frames} frames, camera swinging "
          "around the object on a table, 640x480) -> perception_node code (shipped keypoint "
          "and depth networks, ONNX Runtime) -> eval -> report")
    summary, index = run_demo_object_sample_job(args.out / "demo_object",
                                                n_frames=args.object_frames)
    print(format_summary(summary))
    print(f"replay throughput: {summary['replay_frames_per_s']:.1f} frames/s")
    print(f"report: {index}  (summary: {index.parent / 'summary.json'}; bags: "
          f"{index.parent / 'input_bag'}, {index.parent / 'output_bag'})")
    obj = summary["objects"].get("demo_object", {})
    if summary["frames_with_errors"] or not obj.get("detected"):
        print("FAILED: demo-object frames with errors, or the object was never detected")
        failed = True
    return 1 if failed else 0

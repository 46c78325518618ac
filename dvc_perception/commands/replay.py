# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""`dvc-perception replay IN_BAG -o OUT_BAG`: every frame through the node's code, none dropped.

``--refine`` (= ``--param pipeline.refine.enabled:=true``) refines every pose (render and
compare).
``--init gt-perturbed --perturb-deg D --perturb-frac F --seed S`` measures the refiner alone:
each frame's poses start from the bag's ``/ground_truth/<id>/pose`` perturbed by exactly D deg
and F diameters (`refine.evaluation.perturbed_starts`) instead of coming from the keypoint
source; it needs ``--refine`` (an error otherwise: nothing would be measured) and objects the
node's keypoint source knows (their meshes are loaded at configure). The output bag is then
scored against the ground truth, before (the starts) and after refinement, with the
translation error split into image-plane and depth parts (`bag.init_eval`).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `replay`."""
    parser.add_argument("input_bag", help="rosbag2 (mcap or sqlite3) with camera topics")
    parser.add_argument("-o", "--output", required=True, help="output bag directory")
    parser.add_argument("--params", default="", help="node parameters YAML "
                        "(default: the shipped config/perception.yaml)")  # fmt: skip
    parser.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE",
                        help="parameter override, repeatable (e.g. sync.mode:=exact)")
    parser.add_argument("--image-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--camera-info-topic", default="", help="auto-detected when omitted")
    parser.add_argument("--pose-topic", default="",
                        help="pipeline.depth_source multiview: the camera pose topic "
                             "(geometry_msgs/PoseStamped); auto-detected when omitted (the "
                             "PoseStamped topic in the image's namespace)")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--copy-inputs", action="store_true", help="copy input topics too")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_refine_arguments(parser)


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--refine``, ``--search`` and ``--init`` with its perturbation (`replay`, `eval-bop`)."""
    parser.add_argument("--refine", action="store_true",
                        help="refine every pose by aligning the object's mesh outline with the "
                             "image after PnP (= --param pipeline.refine.enabled:=true; the "
                             "pipeline.refine.* parameters tune it)")
    parser.add_argument("--search", action="store_true",
                        help="find each detector box's pose with the object's mesh alone instead "
                             "of the keypoint network (= --param pipeline.search.enabled:=true, "
                             "with --refine; pipeline.search.num_rotations tunes it)")
    parser.add_argument("--init", choices=("network", "gt-perturbed"), default="network",
                        help="where refinement starts: the keypoint source's poses (default) or "
                             "the ground truth perturbed by --perturb-deg / --perturb-frac "
                             "(measures the refiner alone; needs --refine)")
    parser.add_argument("--perturb-deg", type=float, default=None,
                        help="gt-perturbed: rotation perturbation [deg] (default 10)")
    parser.add_argument("--perturb-frac", type=float, default=None,
                        help="gt-perturbed: translation perturbation [object diameters] "
                             "(default 0.1)")
    parser.add_argument("--seed", type=int, default=None,
                        help="gt-perturbed: seed of the perturbation directions (default 0)")


def with_refine(overrides: dict[str, object], refine: bool, search: bool = False
                ) -> dict[str, object]:
    """`overrides` plus ``pipeline.refine.enabled: true`` when `refine` (``--refine``).

    With `search` (``--search``) also ``pipeline.search.enabled: true`` (and refinement, which
    the search needs).

    Raises:
        ConfigError: a flag and a ``--param`` of its parameter that says anything but true.
    """
    out = dict(overrides)
    if refine or search:
        _force_true(out, "pipeline.refine.enabled", "--refine" if refine else "--search")
    if search:
        _force_true(out, "pipeline.search.enabled", "--search")
    return out


def _force_true(overrides: dict[str, object], key: str, flag: str) -> None:
    """Set ``overrides[key] = True`` for `flag`; ConfigError if a ``--param`` says otherwise."""
    from dvc_perception.errors import ConfigError

    value = overrides.get(key, True)
    if value is not True:
        raise ConfigError(f"{flag} contradicts --param {key}:={value!r}; give one of them")
    overrides[key] = True


def refine_options(args: argparse.Namespace) -> tuple[dict[str, object], Any]:
    """The parameter overrides (with ``--refine``) and the perturbation (None: ``--init network``).

    Raises:
        ConfigError: a bad ``--param``, or ``--init`` options that do not fit together
            (`bag.init_eval.check_init`).
    """
    from dvc_perception.bag.init_eval import Perturbation, check_init

    overrides = with_refine(parse_param_overrides(args.param), args.refine, args.search)
    given = {k: v for k, v in (("deg", args.perturb_deg), ("frac", args.perturb_frac),
                               ("seed", args.seed)) if v is not None}
    check_init(args.init, Perturbation(**given) if given else None, overrides)
    return overrides, Perturbation(**given) if args.init == "gt-perturbed" else None


def parse_param_overrides(items: list[str]) -> dict[str, object]:
    """``["a.b:=3", "c:=true"]`` -> ``{"a.b": 3, "c": True}`` (values parsed as YAML scalars)."""
    import yaml

    from dvc_perception.errors import ConfigError

    out: dict[str, object] = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ConfigError(f"--param {item!r}: expected NAME:=VALUE")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = " ".join(str(err).split())
            raise ConfigError(f"--param {item!r}: the value is not a YAML scalar: {reason}") \
                from err
    return out


def run(args: argparse.Namespace) -> int:
    """Replay and print a summary (the topics chosen and skipped messages on stderr)."""
    import sys

    from dvc_perception.bag.init_eval import bag_truth, starts_by_stamp
    from dvc_perception.bag.replay import replay_bag
    from dvc_perception.refine.evaluation import perturbed_starts

    overrides, perturbation = refine_options(args)
    initial = None
    if perturbation is not None:
        truth = bag_truth(args.input_bag)
        starts = perturbed_starts(truth, perturbation.deg, perturbation.frac, perturbation.seed)
        initial = starts_by_stamp(truth, starts)
    s = replay_bag(
        args.input_bag, args.output, params_file=args.params or None,
        parameters=overrides, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, storage=args.storage,
        copy_inputs=args.copy_inputs, overwrite=args.overwrite,
        log=lambda line: print(line, file=sys.stderr), initial_poses=initial,
        pose_topic=args.pose_topic,
    )  # fmt: skip
    print(f"replayed {s.frames_in} frames of {s.image_topic} ({s.frames_ok} processed, "
          f"{len(s.errors)} error records, {s.detections} detections) in {s.wall_s:.1f} s "
          f"({s.frames_per_s:.1f} frames/s) -> {s.output_bag}")  # fmt: skip
    if s.bad_images:
        print(f"  {s.bad_images} image message(s) did not deserialize: error records of kind "
              "deserialize, stamped with their record time")  # fmt: skip
    if s.bad_camera_info:
        print(f"  {s.bad_camera_info} camera_info message(s) on {s.camera_info_topic} did not "
              "deserialize and were skipped")  # fmt: skip
    for err in s.errors[:10]:
        print(f"  frame {err.stamp_ns} ns: {err.kind}: {err.message}")
    if s.depth_status:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(s.depth_status.items()))
        fallback = f"; {s.depth_fallback} from the fallback network" if s.depth_fallback else ""
        poses = f" (camera poses from {s.pose_topic})" if s.pose_topic else ""
        print(f"  depth{poses}: {counts}{fallback}")
        for note in s.depth_notes:
            print(f"    {note}")
    if perturbation is not None:
        _print_before_after(args.output, args.input_bag, truth, starts, perturbation)
    return 0


def _print_before_after(output_bag: str, input_bag: str, truth: Any, starts: Any,
                        perturbation: Any) -> None:
    """Score the replay against the ground truth before and after refinement; print it."""
    from dvc_perception.bag.evaluate import evaluate_bag
    from dvc_perception.bag.init_eval import before_after_rows
    from dvc_perception.refine.evaluation import format_before_after, summarise_before_after

    rows = before_after_rows(truth, starts, evaluate_bag(output_bag, input_bag))
    print(f"refinement from the ground truth perturbed by {perturbation.describe()} "
          "(after: the published poses; unpublished ones count as failures):")
    print(format_before_after(summarise_before_after(rows)))

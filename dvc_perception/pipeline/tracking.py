# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Tracking by refinement (``pipeline.tracking``): the tracks' state between frames, ROS-free.

`Pipeline.process` drives a `Tracker` per frame:

1. every track's last pose starts this frame's refinement (`Tracker.starts`; one batched
   `refine.refine_pose` call); a track *follows* when its refinement is usable, its cost is at
   most ``max_cost`` and its score ``exp(-refine.cost_weight * cost)`` at least ``min_score``;
2. the keypoint source (detection, PnP, refinement) runs when `Tracker.detection_due`: nothing
   is tracked, ``detect_every`` frames have passed since the last detection, or a track did
   not follow (its re-initialisation);
3. `Tracker.update`: per object id, each track takes the nearest detection of its object
   within the object's diameter (translation distance). A track that followed keeps its own
   pose unless its detection aligns better (a lower refined cost: a track that slid into a
   wrong but acceptable pose is corrected); one that did not follow is re-initialised from its
   detection, or is *lost* without one. A detection that no track took starts a track.
   Detections are trackable when they were refined with cost <= ``max_cost``; others are
   reported for this frame but start nothing (a lost track's object may be found again later,
   under a new track id).

Each track keeps its colour statistics (`refine.ColourStatistics`: foreground / background
histograms) across frames, as SRT3D does: `Tracker.colour_priors` gives them to the next
frame's refinement, which uses them and blends that frame's histograms in at
``colour_learning_rate``; `Tracker.update` stores the result for a track that followed and kept
its own pose. A track re-initialised by a detection, or a new one, starts without (the
detection's pose may be off, and the old histograms belong to a pose that failed); a lost or
reset track's are dropped with it.

A lost track is reported once (`LostTrack`, in `FrameResult.lost`) and its pose never again:
no stale pose is reported as current. Stamps going backwards (a bag played again) reset the
tracks. Two tracks on one object are not merged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dvc_perception.pipeline.pose import InitialPose
from dvc_perception.refine.region import ColourStatistics

if TYPE_CHECKING:
    from dvc_perception.pipeline.pipeline import ObjectPose


@dataclass(frozen=True)
class LostTrack:
    """A track that ended in this frame.

    Attributes:
        object_id: the tracked object's id.
        track_id: the track's id (as `ObjectPose.track_id` carried it).
        R: (3, 3) float64, the last pose reported for it (object in camera).
        t: (3,) float64 m.
        reason: why, e.g. ``cost 0.81 > max_cost 0.6`` or ``refinement unusable``.
    """

    object_id: str
    track_id: int
    R: np.ndarray
    t: np.ndarray
    reason: str


@dataclass(frozen=True)
class _Track:
    track_id: int
    object_id: str
    R: np.ndarray
    t: np.ndarray
    colours: ColourStatistics | None = None


def follows(pose: ObjectPose | None, max_cost: float, min_score: float) -> bool:
    """Whether a refined track pose is kept: refined, cost <= `max_cost`, score >= `min_score`."""
    return (pose is not None and pose.refine_cost is not None
            and pose.refine_cost <= max_cost and pose.score >= min_score)


def why_not_following(pose: ObjectPose | None, max_cost: float, min_score: float) -> str:
    """The reason `follows` is False, for `LostTrack.reason`."""
    if pose is None or pose.refine_cost is None:
        return "refinement unusable (outside the image, behind the camera, too little outline)"
    if pose.refine_cost > max_cost:
        return f"cost {pose.refine_cost:.3f} > max_cost {max_cost:g}"
    return f"score {pose.score:.3f} < min_score {min_score:g}"


class Tracker:
    """Tracks of object poses across frames (see the module docstring).

    Args:
        gates_m: per object id, the largest translation distance [m] at which a detection
            belongs to a track (the object's diameter); objects missing here are not tracked.
    """

    def __init__(self, gates_m: Mapping[str, float]) -> None:
        self.gates_m = dict(gates_m)
        self.tracks: list[_Track] = []
        self.frames_since_detection: int | None = None  # None: no detection yet
        self.last_stamp: float | None = None
        self._next_id = 0

    def reset(self) -> None:
        """Forget every track (they are not reported lost) and the detection schedule."""
        self.tracks = []
        self.frames_since_detection = None
        self.last_stamp = None

    def begin_frame(self, stamp: float) -> None:
        """Start a frame at `stamp` [s]; a stamp before the previous one resets the tracks."""
        if self.last_stamp is not None and stamp < self.last_stamp:
            self.reset()
        self.last_stamp = stamp

    def starts(self) -> list[InitialPose]:
        """Each track's last pose, to refine in the new frame (score 1: alignment decides)."""
        return [InitialPose(k.object_id, k.R, k.t, 1.0, k.track_id) for k in self.tracks]

    def colour_priors(self) -> list[ColourStatistics | None]:
        """Each track's colour statistics (None: none yet), in the order of `starts`."""
        return [k.colours for k in self.tracks]

    def detection_due(self, followed: Sequence[ObjectPose | None], detect_every: int,
                      max_cost: float, min_score: float) -> bool:
        """Whether the keypoint source runs on this frame.

        Args:
            followed: the refinement of each of `starts` (None: unusable).
            detect_every: N of ``pipeline.tracking.detect_every``.
            max_cost: ``pipeline.tracking.max_cost``.
            min_score: ``pipeline.min_score``.
        """
        since = self.frames_since_detection
        return (not self.tracks or since is None or since + 1 >= detect_every
                or not all(follows(p, max_cost, min_score) for p in followed))

    def update(self, followed: Sequence[ObjectPose | None], detected: Sequence[ObjectPose] | None,
               max_cost: float, min_score: float,
               colours: Sequence[ColourStatistics | None] | None = None
               ) -> tuple[list[ObjectPose], list[LostTrack]]:
        """The frame's poses and lost tracks; the tracks move on to this frame's poses.

        Args:
            followed: the refinement of each of `starts`, in order (None: unusable).
            detected: the keypoint source's refined poses, None when it did not run.
            max_cost: ``pipeline.tracking.max_cost``.
            min_score: ``pipeline.min_score``.
            colours: the final colour statistics of each of `followed`'s refinements
                (`refine.RefineResult.colours`); kept by the tracks that follow with their own
                pose. None: none (every track's are dropped).

        Raises:
            ValueError: `followed` (or `colours`) does not have one entry per track.
        """
        if len(followed) != len(self.tracks):
            raise ValueError(f"Tracker.update: expected {len(self.tracks)} followed poses (one "
                             f"per track), got {len(followed)}")
        if colours is None:
            colours = [None] * len(self.tracks)
        if len(colours) != len(self.tracks):
            raise ValueError(f"Tracker.update: expected {len(self.tracks)} colour statistics "
                             f"(one per track), got {len(colours)}")
        pending = list(detected or [])
        poses: list[ObjectPose] = []
        lost: list[LostTrack] = []
        tracks: list[_Track] = []
        for track, pose, colour in zip(self.tracks, followed, colours):
            ok = follows(pose, max_cost, min_score)
            where = pose.t if ok and pose is not None else track.t
            match = self._take_nearest(track.object_id, where, pending)
            if ok and pose is not None and not _aligns_better(match, pose, max_cost):
                chosen: ObjectPose | None = pose
            elif match is not None and _trackable(match, max_cost):
                chosen = dataclasses.replace(match, track_id=track.track_id)
                colour = None  # re-initialised: new statistics from the detection's pose on
            else:
                if match is not None:
                    pending.append(match)  # reported below, untracked
                lost.append(LostTrack(track.object_id, track.track_id, track.R, track.t,
                                      why_not_following(pose, max_cost, min_score)))
                continue
            poses.append(chosen)
            tracks.append(_Track(track.track_id, track.object_id, chosen.R, chosen.t, colour))
        for det in pending:
            if _trackable(det, max_cost) and det.object_id in self.gates_m:
                track_id = self._new_id()
                det = dataclasses.replace(det, track_id=track_id)
                tracks.append(_Track(track_id, det.object_id, det.R, det.t))
            poses.append(det)
        self.tracks = tracks
        ran = detected is not None
        since = self.frames_since_detection
        self.frames_since_detection = 0 if ran or since is None else since + 1
        return poses, lost

    def _take_nearest(self, object_id: str, t: np.ndarray, pending: list[ObjectPose]
                      ) -> ObjectPose | None:
        """Remove and return the detection of `object_id` nearest to `t` within its gate."""
        gate = self.gates_m.get(object_id, 0.0)
        best, best_d = None, math.inf
        for k, det in enumerate(pending):
            d = float(np.linalg.norm(det.t - t))
            if det.object_id == object_id and d <= gate and d < best_d:
                best, best_d = k, d
        return None if best is None else pending.pop(best)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1


def _aligns_better(detection: ObjectPose | None, pose: ObjectPose, max_cost: float) -> bool:
    """Whether a trackable `detection` has a lower refined cost than the track's `pose`."""
    return (detection is not None and _trackable(detection, max_cost)
            and float(detection.refine_cost or 0.0) < float(pose.refine_cost or 0.0))


def _trackable(pose: ObjectPose, max_cost: float) -> bool:
    """A detection refined with cost <= `max_cost` (one without a refiner model is not)."""
    return pose.refine_cost is not None and pose.refine_cost <= max_cost

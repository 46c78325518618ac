# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A small TF buffer of our own: transforms between frames at a stamp, from /tf and /tf_static.

What tf2's ``BufferCore::lookupTransform(target, source, time)`` does, for the node's
``output_frame``, where tf2_ros is not a PyPI wheel: the frames form a tree (each child has one
parent); a lookup walks from both frames up to their closest common ancestor and composes the
links. A dynamic link (/tf) is interpolated at the stamp between its two nearest samples (slerp of
the rotation, linear translation: `geometry.stamped.StampedTransforms`), as tf2 does, and never
extrapolated: a stamp before its oldest or after its newest sample is an error (`lookup` can wait
for newer samples). A static link (/tf_static) holds at every stamp. There is no "latest" lookup.

Transforms are ``T_parent_child``: a point in the child frame is ``R @ p + t`` in the parent.
Quaternions are ROS order (x, y, z, w). The buffer is thread-safe: subscription callbacks add,
the node's worker thread looks up.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from dvc_perception.errors import InputError
from dvc_perception.geometry.stamped import (
    AFTER,
    SampleUnavailable,
    StampedTransforms,
    wait_for_sample,
)

#: How long dynamic samples are kept, behind the newest one of their link (tf2's default).
DEFAULT_CACHE_S = 10.0


class TransformUnavailable(InputError):
    """No transform between two frames at a stamp: frames not connected, or no data there."""


@dataclass
class _Link:
    """The samples of one parent -> child link (a static link holds one, valid at every stamp)."""

    parent: str
    static: bool
    samples: StampedTransforms


class TransformBuffer:
    """Transforms of /tf and /tf_static by child frame, looked up at a stamp.

    Args:
        cache_s: dynamic samples older than this behind the newest sample of their link are
            dropped [s]; None keeps every sample (a bag replay, which loads all of them first).
    """

    def __init__(self, cache_s: float | None = DEFAULT_CACHE_S) -> None:
        self._cache_ns = None if cache_s is None else int(cache_s * 1e9)
        self._links: dict[str, _Link] = {}
        self._changed = threading.Condition()

    def add(self, parent: str, child: str, stamp_ns: int, quaternion_xyzw: Any,
            translation: Any, *, static: bool) -> None:  # fmt: skip
        """Add one transform ``T_parent_child`` (a new parent of `child` replaces its history).

        Raises:
            InputError: an empty frame name, a frame its own parent, a non-finite or zero
                quaternion or a non-finite translation (a bad /tf message: the caller skips it).
        """
        q = np.asarray(quaternion_xyzw, np.float64).reshape(4)
        t = np.asarray(translation, np.float64).reshape(3)
        norm = float(np.linalg.norm(q))
        if not parent or not child or parent == child:
            raise InputError(f"transform {parent!r} -> {child!r}: expected two different, "
                             "non-empty frame names")  # fmt: skip
        if not (np.isfinite(norm) and norm > 0 and np.all(np.isfinite(t))):
            raise InputError(f"transform {parent!r} -> {child!r} at {stamp_ns} ns: expected a "
                             f"finite non-zero quaternion and translation, got {q.tolist()}, "
                             f"{t.tolist()}")  # fmt: skip
        with self._changed:
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static or static:
                samples = StampedTransforms(None if static else self._cache_ns)
                link = self._links[child] = _Link(parent, static, samples)
            link.samples.insert_quaternion(stamp_ns, q, t)  # same stamp: replaced
            self._changed.notify_all()

    def add_message(self, msg: Any, *, static: bool) -> int:
        """Add every transform of a tf2_msgs/TFMessage; returns how many were bad (skipped)."""
        bad = 0
        for tf in msg.transforms:
            r, tr = tf.transform.rotation, tf.transform.translation
            stamp = int(tf.header.stamp.sec) * 1_000_000_000 + int(tf.header.stamp.nanosec)
            try:
                self.add(tf.header.frame_id, tf.child_frame_id, stamp, (r.x, r.y, r.z, r.w),
                         (tr.x, tr.y, tr.z), static=static)  # fmt: skip
            except InputError:
                bad += 1
        return bad

    def lookup(self, target: str, source: str, stamp_ns: int, timeout_s: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``T_target_source`` at `stamp_ns`: (R (3, 3), t (3,) m), ``p_target = R p + t``.

        Args:
            target: the frame to express data in (e.g. ``base_link``).
            source: the frame the data is in (e.g. the camera's optical frame).
            stamp_ns: the data's stamp [ns].
            timeout_s: how long to wait for samples newer than `stamp_ns` when a link has
                none yet (TF usually arrives after the image it belongs to).

        Raises:
            TransformUnavailable: naming the frames: not connected (or unknown), or a dynamic
                link without samples around `stamp_ns` (extrapolation).
        """
        return wait_for_sample(self._changed, lambda: self._lookup(target, source, stamp_ns),
                               timeout_s, retry_on=_Future, give_up=TransformUnavailable)

    # ------------------------------------------------------------------ internals
    def _chain(self, frame: str) -> list[str]:
        """`frame` and its ancestors up to its root."""
        chain = [frame]
        while chain[-1] in self._links:
            parent = self._links[chain[-1]].parent
            if parent in chain:
                raise TransformUnavailable(f"the TF tree has a loop through {parent!r}: "
                                           f"{' -> '.join([*chain, parent])}")  # fmt: skip
            chain.append(parent)
        return chain

    def _lookup(self, target: str, source: str, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        if target == source:
            return np.eye(3), np.zeros(3)
        up_source, up_target = self._chain(source), self._chain(target)
        common = next((f for f in up_source if f in set(up_target)), None)
        if common is None:
            known = sorted({*self._links, *(link.parent for link in self._links.values())})
            raise TransformUnavailable(
                f"no transform from {source!r} to {target!r} at {stamp_ns} ns: the frames are "
                "not connected "
                f"(root of {source!r}: {up_source[-1]!r}, of {target!r}: {up_target[-1]!r}; "
                f"known frames: {known[:20]})"
            )
        R_cs, t_cs = self._to_ancestor(up_source, common, stamp_ns, (target, source))
        R_ct, t_ct = self._to_ancestor(up_target, common, stamp_ns, (target, source))
        return R_ct.T @ R_cs, R_ct.T @ (t_cs - t_ct)

    def _to_ancestor(self, chain: list[str], ancestor: str, stamp_ns: int,
                     asked: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``T_ancestor_frame`` for ``frame = chain[0]``, composing the links up to `ancestor`."""
        R, t = np.eye(3), np.zeros(3)
        for child in chain[: chain.index(ancestor)]:
            R_l, t_l = self._sample(child, stamp_ns, asked)
            R, t = R_l @ R, R_l @ t + t_l
        return R, t

    def _sample(self, child: str, stamp_ns: int, asked: tuple[str, str]
                ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        link = self._links[child]
        samples = link.samples
        if link.static:
            return samples.lookup(samples.newest_ns)
        try:
            return samples.lookup(stamp_ns)
        except SampleUnavailable as err:
            what = (f"no transform from {asked[1]!r} to {asked[0]!r} at {stamp_ns} ns: link "
                    f"{link.parent!r} -> {child!r} has samples from {err.oldest_ns} to "
                    f"{err.newest_ns} ns")  # fmt: skip
            if err.reason == AFTER:
                raise _Future(f"{what}; the stamp is {err.outside_ms:.1f} ms after the newest "
                              "(extrapolation into the future)") from None
            raise TransformUnavailable(f"{what}; the stamp is {err.outside_ms:.1f} ms before the "
                                       "oldest (extrapolation into the past)") from None


class _Future(TransformUnavailable):
    """A dynamic link has no sample at or after the stamp yet (worth waiting for)."""

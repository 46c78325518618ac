# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Stamped rigid transforms of one moving frame, looked up at a stamp (the one such buffer).

`StampedTransforms` keeps samples ``(R, t)`` of ``T_parent_child`` (a point in the child frame is
``R @ p + t`` in the parent) sorted by stamp [ns], in any arrival order, pruned to a maximum
age behind the newest. A lookup at a stamp returns the sample there, or interpolates between
the two samples around it: translation linearly, rotation by `slerp_quaternion` (the geodesic
``R0 exp(s log(R0^T R1))``, the shorter arc). It never extrapolates: a stamp before the oldest
or after the newest sample, or between two samples further apart than an optional maximum gap,
is a `SampleUnavailable` saying which. Used by `pipeline.multiview.CameraPoseBuffer` (camera
poses) and `ros.tf_buffer.TransformBuffer` (one per /tf link).

Not thread-safe: the callers hold their own lock (`threading.Condition`) around it and wait
for newer samples with `wait_for_sample`.

Quaternions are ``(x, y, z, w)``, as in `geometry.so3`.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from dvc_perception.errors import InputError, check_shape
from dvc_perception.geometry.so3 import matrix_to_quaternion, quaternion_to_matrix

_Result = TypeVar("_Result")

#: `SampleUnavailable.reason`: no sample stored.
EMPTY = "empty"
#: `SampleUnavailable.reason`: the stamp is before the oldest sample.
BEFORE = "before"
#: `SampleUnavailable.reason`: the stamp is after the newest sample (a newer one may still come).
AFTER = "after"
#: `SampleUnavailable.reason`: the samples around the stamp are more than the maximum gap apart.
GAP = "gap"


class SampleUnavailable(InputError):
    """No transform at a stamp (`StampedTransforms.lookup`); the callers reword it.

    Attributes:
        reason: `EMPTY`, `BEFORE`, `AFTER` or `GAP`.
        stamp_ns: the stamp looked up [ns].
        oldest_ns: the oldest sample's stamp [ns] (0 when empty).
        newest_ns: the newest sample's stamp [ns] (0 when empty).
        gap_ns: how far apart the two samples around the stamp are [ns] (`GAP` only, else 0).
        max_gap_ns: the largest gap allowed [ns] (`GAP` only, else 0).
    """

    def __init__(self, reason: str, stamp_ns: int, oldest_ns: int = 0, newest_ns: int = 0,
                 gap_ns: int = 0, max_gap_ns: int = 0) -> None:  # fmt: skip
        self.reason, self.stamp_ns = reason, stamp_ns
        self.oldest_ns, self.newest_ns = oldest_ns, newest_ns
        self.gap_ns, self.max_gap_ns = gap_ns, max_gap_ns
        span = f"samples from {oldest_ns} to {newest_ns} ns"
        detail = {
            EMPTY: "no sample stored",
            BEFORE: f"{span}; the stamp is {self.outside_ms:.1f} ms before the oldest",
            AFTER: f"{span}; the stamp is {self.outside_ms:.1f} ms after the newest",
            GAP: f"the samples around it are {gap_ns / 1e9:.3f} s apart, more than "
                 f"{max_gap_ns / 1e9:g} s",
        }[reason]
        super().__init__(f"no transform at {stamp_ns} ns: {detail}")

    @property
    def later(self) -> bool:
        """Whether a newer sample may still make the stamp available (`EMPTY`, `AFTER`)."""
        return self.reason in (EMPTY, AFTER)

    @property
    def outside_ms(self) -> float:
        """How far the stamp is before the oldest (`BEFORE`) or after the newest (`AFTER`) [ms]."""
        if self.reason == BEFORE:
            return (self.oldest_ns - self.stamp_ns) / 1e6
        if self.reason == AFTER:
            return (self.stamp_ns - self.newest_ns) / 1e6
        return 0.0


def slerp_quaternion(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions along the shorter arc.

    Args:
        q0: (4,) unit quaternion ``(x, y, z, w)`` at ``s = 0``.
        q1: (4,) unit quaternion at ``s = 1`` (``q1`` and ``-q1`` give the same result).
        s: the fraction of the way from `q0` to `q1`, in [0, 1].

    Returns:
        (4,) float64 unit quaternion.
    """
    q0, q1 = np.asarray(q0, np.float64), np.asarray(q1, np.float64)
    if float(q0 @ q1) < 0.0:  # q and -q are one rotation: take the shorter way
        q1 = -q1
    # The angle between the two 4-vectors, stable near 0 (unlike arccos of the dot product).
    theta = 2.0 * np.arctan2(np.linalg.norm(q1 - q0), np.linalg.norm(q1 + q0))
    if theta < 1e-9:  # (nearly) one rotation: the linear blend, error ~theta^3
        q = (1.0 - s) * q0 + s * q1
    else:
        q = (np.sin((1.0 - s) * theta) * q0 + np.sin(s * theta) * q1) / np.sin(theta)
    return q / np.linalg.norm(q)


class StampedTransforms:
    """Samples ``(R, t)`` of one transform sorted by stamp [ns], looked up at a stamp.

    Each sample keeps the rotation in the form it was given (matrix or quaternion) and converts
    to the other on first use (`geometry.so3`), so adding is cheap.

    Args:
        max_age_ns: samples older than this behind the newest one are dropped when a sample is
            added [ns]; None keeps every sample.
    """

    def __init__(self, max_age_ns: int | None = None) -> None:
        self.max_age_ns = max_age_ns
        self._stamps: list[int] = []
        self._R: list[np.ndarray | None] = []
        self._q: list[np.ndarray | None] = []
        self._t: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def oldest_ns(self) -> int | None:
        """The oldest sample's stamp [ns]; None when empty."""
        return self._stamps[0] if self._stamps else None

    @property
    def newest_ns(self) -> int | None:
        """The newest sample's stamp [ns]; None when empty."""
        return self._stamps[-1] if self._stamps else None

    def insert(self, stamp_ns: int, R: Any, t: Any) -> None:
        """Add the sample ``(R, t)`` at `stamp_ns` [ns] (a sample at that stamp is replaced).

        Args:
            stamp_ns: the sample's stamp [ns], in any order.
            R: (3, 3) rotation of the child frame in the parent (not checked to be one).
            t: (3,) translation of the child frame in the parent [m].

        Raises:
            ShapeError: not (3, 3) and (3,).
        """
        R = np.array(R, np.float64)
        check_shape(R, "3,3", name="R")
        self._insert(stamp_ns, R, None, t)

    def insert_quaternion(self, stamp_ns: int, quaternion_xyzw: Any, t: Any) -> None:
        """`insert` with the rotation as a quaternion (normalised here).

        Args:
            stamp_ns: the sample's stamp [ns], in any order.
            quaternion_xyzw: (4,) quaternion ``(x, y, z, w)`` of the child frame in the parent.
            t: (3,) translation of the child frame in the parent [m].

        Raises:
            ShapeError: not (4,) and (3,).
            InputError: a zero or non-finite quaternion.
        """
        q = np.array(quaternion_xyzw, np.float64)
        check_shape(q, "4", name="quaternion_xyzw")
        norm = float(np.linalg.norm(q))
        if not (np.isfinite(norm) and norm > 0.0):
            raise InputError(f"sample at {stamp_ns} ns: expected a finite non-zero quaternion, "
                             f"got {q.tolist()}")
        self._insert(stamp_ns, None, q / norm, t)

    def lookup(self, stamp_ns: int, max_gap_ns: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The transform at `stamp_ns`: the sample there, or interpolated between two around it.

        Args:
            stamp_ns: the stamp [ns].
            max_gap_ns: the samples just before and after the stamp may be at most this far
                apart [ns] (a sample at the stamp itself is always used); None: no limit.

        Returns:
            ``(R (3, 3), t (3,) m)`` float64, new arrays.

        Raises:
            SampleUnavailable: no sample, the stamp outside the samples (no extrapolation), or
                the samples around it more than `max_gap_ns` apart.
        """
        stamps = self._stamps
        if not stamps:
            raise SampleUnavailable(EMPTY, stamp_ns)
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            return self._rotation(i).copy(), self._t[i].copy()
        if i == len(stamps) or i == 0:
            raise SampleUnavailable(AFTER if i else BEFORE, stamp_ns, stamps[0], stamps[-1])
        gap = stamps[i] - stamps[i - 1]
        if max_gap_ns is not None and gap > max_gap_ns:
            raise SampleUnavailable(GAP, stamp_ns, stamps[0], stamps[-1], gap, max_gap_ns)
        s = (stamp_ns - stamps[i - 1]) / gap
        q = slerp_quaternion(self._quaternion(i - 1), self._quaternion(i), s)
        R = quaternion_to_matrix(torch.as_tensor(q)).numpy()
        return R, (1.0 - s) * self._t[i - 1] + s * self._t[i]

    # ------------------------------------------------------------------ internals
    def _insert(self, stamp_ns: int, R: np.ndarray | None, q: np.ndarray | None,
                t: Any) -> None:  # fmt: skip
        t = np.array(t, np.float64)
        check_shape(t, "3", name="t")
        stamps = self._stamps
        i = bisect.bisect_left(stamps, stamp_ns)
        if i < len(stamps) and stamps[i] == stamp_ns:
            self._R[i], self._q[i], self._t[i] = R, q, t
        else:
            stamps.insert(i, stamp_ns)
            self._R.insert(i, R)
            self._q.insert(i, q)
            self._t.insert(i, t)
        if self.max_age_ns is not None:
            keep = bisect.bisect_left(stamps, stamps[-1] - self.max_age_ns)
            if keep:
                del stamps[:keep], self._R[:keep], self._q[:keep], self._t[:keep]

    def _rotation(self, i: int) -> np.ndarray:
        R = self._R[i]
        if R is None:
            R = self._R[i] = quaternion_to_matrix(torch.as_tensor(self._q[i])).numpy()
        return R

    def _quaternion(self, i: int) -> np.ndarray:
        q = self._q[i]
        if q is None:
            q = self._q[i] = matrix_to_quaternion(torch.as_tensor(self._R[i])).numpy()
        return q


def wait_for_sample(changed: threading.Condition, attempt: Callable[[], _Result],
                    timeout_s: float, retry_on: type[Exception],
                    give_up: Callable[[str], Exception]) -> _Result:  # fmt: skip
    """`attempt()` with `changed` held, retried each time `changed` is notified.

    Args:
        changed: the lock the samples are added under; adding notifies it.
        attempt: the lookup.
        timeout_s: how long to retry [s] (0: once).
        retry_on: the error of `attempt` worth waiting on (a sample after the stamp not yet
            received); other errors propagate at once.
        give_up: makes the error raised after `timeout_s` from the last error's message with
            `` (waited <timeout_s> s)`` appended.
    """
    deadline = time.monotonic() + timeout_s
    with changed:
        while True:
            try:
                return attempt()
            except retry_on as err:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not changed.wait(remaining):
                    raise give_up(f"{err} (waited {timeout_s:g} s)") from None

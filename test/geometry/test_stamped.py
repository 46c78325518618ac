# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""StampedTransforms against scipy's Slerp and float64 closed forms: exact stamps, fractions
between samples, no extrapolation, the gap rule, age pruning, arrival order; and the waiting
lookup."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from dvc_perception.errors import InputError, ShapeError
from dvc_perception.geometry.stamped import (
    AFTER,
    BEFORE,
    EMPTY,
    GAP,
    SampleUnavailable,
    StampedTransforms,
    slerp_quaternion,
    wait_for_sample,
)

MS = 1_000_000  # ns per ms


def _samples(n: int, seed: int) -> tuple[list[int], Rotation, np.ndarray]:
    rng = np.random.default_rng(seed)
    stamps = np.cumsum(rng.integers(1 * MS, 50 * MS, n)).tolist()
    return stamps, Rotation.random(n, random_state=seed), rng.uniform(-3.0, 3.0, (n, 3))


def _filled(stamps, rots: Rotation, ts, as_quaternion: bool, order, **kw) -> StampedTransforms:
    buf = StampedTransforms(**kw)
    for k in order:
        if as_quaternion:
            buf.insert_quaternion(stamps[k], rots[k].as_quat(), ts[k])
        else:
            buf.insert(stamps[k], rots[k].as_matrix(), ts[k])
    return buf


@pytest.mark.parametrize("as_quaternion", [False, True], ids=["matrix", "quaternion"])
def test_lookup_matches_scipy_slerp_in_any_arrival_order(as_quaternion):
    stamps, rots, ts = _samples(12, seed=1)
    order = np.random.default_rng(2).permutation(len(stamps))  # not monotonic
    buf = _filled(stamps, rots, ts, as_quaternion, order)
    assert len(buf) == 12 and (buf.oldest_ns, buf.newest_ns) == (stamps[0], stamps[-1])
    slerp = Slerp(np.array(stamps, np.float64), rots)
    for k, stamp in enumerate(stamps):  # exact stamps: the sample itself
        R, t = buf.lookup(stamp)
        np.testing.assert_allclose(R, rots[k].as_matrix(), atol=1e-15 if not as_quaternion
                                   else 1e-12)  # fmt: skip
        np.testing.assert_array_equal(t, ts[k])
    rng = np.random.default_rng(3)
    for k in range(len(stamps) - 1):
        for s in (0.5, 1e-9, 1 - 1e-9, *rng.uniform(0, 1, 3)):
            stamp = stamps[k] + int(round(s * (stamps[k + 1] - stamps[k])))
            a = (stamp - stamps[k]) / (stamps[k + 1] - stamps[k])
            R, t = buf.lookup(stamp)
            np.testing.assert_allclose(R, slerp([float(stamp)]).as_matrix()[0], atol=1e-12)
            np.testing.assert_allclose(t, (1 - a) * ts[k] + a * ts[k + 1], atol=1e-12)
            np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-14)


@pytest.mark.parametrize(("a0", "a1"), [(0.0, 1.0), (0.3, -2.9), (3.0, -3.0), (1.0, 1.0 + 1e-13),
                                        (-1.5, 1.5)])
def test_rotation_about_one_axis_is_the_linear_blend_of_the_angle_the_short_way(a0, a1):
    axis = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    d = (a1 - a0 + np.pi) % (2 * np.pi) - np.pi  # the shorter way, (3.0, -3.0): through pi
    buf = StampedTransforms()
    buf.insert(0, Rotation.from_rotvec(a0 * axis).as_matrix(), np.zeros(3))
    buf.insert(1000, Rotation.from_rotvec(a1 * axis).as_matrix(), np.zeros(3))
    for stamp in (0, 1, 250, 500, 999, 1000):
        expected = Rotation.from_rotvec((a0 + stamp / 1000 * d) * axis).as_matrix()
        np.testing.assert_allclose(buf.lookup(stamp)[0], expected, atol=1e-12)


def test_slerp_quaternion_takes_the_short_arc_for_q_and_minus_q():
    q0, q1 = Rotation.random(2, random_state=7).as_quat()
    ref = Slerp([0.0, 1.0], Rotation.from_quat([q0, q1]))
    for s in (0.0, 0.3, 1.0):
        expected = ref([s]).as_matrix()[0]
        for sign in (1.0, -1.0):
            got = Rotation.from_quat(slerp_quaternion(q0, sign * q1, s)).as_matrix()
            np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(slerp_quaternion(q0, q0, 0.4), q0, atol=1e-15)
    np.testing.assert_allclose(slerp_quaternion(q0, -q0, 0.4), q0, atol=1e-15)


def test_no_extrapolation_before_the_oldest_or_after_the_newest():
    buf = StampedTransforms()
    with pytest.raises(SampleUnavailable, match="no sample stored") as info:
        buf.lookup(5)
    assert info.value.reason == EMPTY and info.value.later
    assert buf.oldest_ns is None and buf.newest_ns is None
    buf.insert(10 * MS, np.eye(3), [1.0, 0.0, 0.0])
    buf.insert(20 * MS, np.eye(3), [2.0, 0.0, 0.0])
    with pytest.raises(SampleUnavailable, match=r"1\.5 ms before the oldest") as info:
        buf.lookup(8_500_000)
    err = info.value
    assert (err.reason, err.later, err.oldest_ns, err.newest_ns) == (BEFORE, False, 10 * MS,
                                                                     20 * MS)
    for stamp in (20 * MS + 1, 10**18):
        with pytest.raises(SampleUnavailable, match="after the newest") as info:
            buf.lookup(stamp)
        assert info.value.reason == AFTER and info.value.later
    assert info.value.outside_ms == pytest.approx((10**18 - 20 * MS) / 1e6)
    with pytest.raises(SampleUnavailable):
        buf.lookup(10 * MS - 1)
    assert isinstance(SampleUnavailable(EMPTY, 0), InputError)


def test_gap_rule_between_the_two_samples_around_the_stamp():
    buf = StampedTransforms()
    for stamp in (0, 100 * MS, 400 * MS):
        buf.insert(stamp, np.eye(3), [stamp / 1e9, 0.0, 0.0])
    with pytest.raises(SampleUnavailable, match=r"0\.300 s apart, more than 0\.1 s") as info:
        buf.lookup(250 * MS, max_gap_ns=100 * MS)
    assert (info.value.reason, info.value.gap_ns, info.value.max_gap_ns) == (GAP, 300 * MS,
                                                                             100 * MS)
    assert not info.value.later
    assert buf.lookup(50 * MS, max_gap_ns=100 * MS)[1][0] == pytest.approx(0.05)  # gap == max
    assert buf.lookup(100 * MS, max_gap_ns=1)[1][0] == pytest.approx(0.1)  # a sample there
    assert buf.lookup(250 * MS)[1][0] == pytest.approx(0.25)  # no limit


def test_age_pruning_keeps_max_age_behind_the_newest():
    buf = StampedTransforms(max_age_ns=10 * MS)
    for k in range(16):
        buf.insert(k * MS, np.eye(3), [k, 0.0, 0.0])
    assert (len(buf), buf.oldest_ns, buf.newest_ns) == (11, 5 * MS, 15 * MS)  # 5 ms: kept
    with pytest.raises(SampleUnavailable, match="before the oldest"):
        buf.lookup(5 * MS - 1)
    buf.insert(2 * MS, np.eye(3), [2.0, 0.0, 0.0])  # late and already too old: dropped
    assert (len(buf), buf.oldest_ns) == (11, 5 * MS)
    buf.insert(7 * MS + MS // 2, np.eye(3), [7.5, 0.0, 0.0])  # late but recent: kept
    assert len(buf) == 12 and buf.lookup(7 * MS + MS // 4)[1][0] == pytest.approx(7.25)
    everything = StampedTransforms()
    for k in range(16):
        everything.insert(k * 10**9, np.eye(3), np.zeros(3))
    assert len(everything) == 16


def test_a_sample_at_a_held_stamp_replaces_it_and_results_are_copies():
    buf = StampedTransforms()
    buf.insert(0, np.eye(3), [0.0, 0.0, 0.0])
    buf.insert(10, np.eye(3), [1.0, 0.0, 0.0])
    R_z = Rotation.from_rotvec([0.0, 0.0, 0.4])
    buf.insert_quaternion(10, 3.0 * R_z.as_quat(), [2.0, 0.0, 0.0])  # normalised
    assert len(buf) == 2
    R, t = buf.lookup(10)
    np.testing.assert_allclose(R, R_z.as_matrix(), atol=1e-15)
    R[:] = 0.0
    t[:] = 0.0
    np.testing.assert_allclose(buf.lookup(10)[1], [2.0, 0.0, 0.0])
    np.testing.assert_allclose(buf.lookup(5)[0], Rotation.from_rotvec([0, 0, 0.2]).as_matrix(),
                               atol=1e-15)


def test_bad_samples_are_refused_and_not_stored():
    buf = StampedTransforms()
    with pytest.raises(ShapeError):
        buf.insert(0, np.eye(4), np.zeros(3))
    with pytest.raises(ShapeError):
        buf.insert(0, np.eye(3), np.zeros(4))
    for q in ([0.0, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0, 1.0]):
        with pytest.raises(InputError, match="finite non-zero quaternion"):
            buf.insert_quaternion(0, q, np.zeros(3))
    assert len(buf) == 0


class _Later(InputError):
    pass


class _GaveUp(InputError):
    pass


def test_wait_for_sample_retries_on_notify_and_gives_up_after_the_timeout():
    changed = threading.Condition()
    buf = StampedTransforms()
    buf.insert(0, np.eye(3), np.zeros(3))

    def attempt(stamp: int = 50):
        try:
            return buf.lookup(stamp)
        except SampleUnavailable as err:
            raise (_Later if err.later else InputError)(str(err)) from None

    def publish() -> None:
        time.sleep(0.2)
        with changed:
            buf.insert(100, np.eye(3), [1.0, 0.0, 0.0])
            changed.notify_all()

    thread = threading.Thread(target=publish)
    t0 = time.monotonic()
    thread.start()
    R, t = wait_for_sample(changed, attempt, 5.0, retry_on=_Later, give_up=_GaveUp)
    thread.join()
    assert 0.15 < time.monotonic() - t0 < 4.0 and t[0] == pytest.approx(0.5)
    with pytest.raises(_GaveUp, match=r"after the newest \(waited 0\.1 s\)$"):
        wait_for_sample(changed, lambda: buf.lookup(200), 0.1, retry_on=SampleUnavailable,
                        give_up=_GaveUp)  # fmt: skip
    t0 = time.monotonic()
    with pytest.raises(_GaveUp, match=r"\(waited 0 s\)"):
        wait_for_sample(changed, lambda: attempt(200), 0.0, retry_on=_Later, give_up=_GaveUp)
    with pytest.raises(SampleUnavailable, match="before the oldest"):  # not retried
        wait_for_sample(changed, lambda: buf.lookup(-1), 5.0, retry_on=_Later, give_up=_GaveUp)
    assert time.monotonic() - t0 < 1.0

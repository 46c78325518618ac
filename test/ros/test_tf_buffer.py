# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""TransformBuffer against 4x4 matrices composed here and scipy's Slerp: chains, branches,
interpolation at a stamp, static links, extrapolation refused, waiting for newer samples; and
`pose_in_frame`'s covariance against a finite-difference Jacobian of the frame change."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from dvc_perception.errors import InputError
from dvc_perception.pipeline.pipeline import ObjectPose
from dvc_perception.ros.convert import pose_in_frame
from dvc_perception.ros.tf_buffer import TransformBuffer, TransformUnavailable

S = 1_000_000_000  # ns per s


def _T(rot: Rotation, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rot.as_matrix(), t
    return T


def _add(buf: TransformBuffer, parent: str, child: str, stamp: int, T: np.ndarray,
         static: bool = False) -> None:
    buf.add(parent, child, stamp, Rotation.from_matrix(T[:3, :3]).as_quat(), T[:3, 3],
            static=static)


def _robot() -> tuple[TransformBuffer, dict[str, np.ndarray]]:
    """map -> odom -> base_link (dynamic at 1 s and 2 s), base_link -> camera_link ->
    camera_optical and base_link -> arm (static)."""
    buf = TransformBuffer()
    rng = np.random.default_rng(0)
    T = {}
    for name in ("odom@1", "odom@2", "base@1", "base@2", "cam", "optical", "arm"):
        T[name] = _T(Rotation.random(random_state=rng.integers(1 << 30)), rng.normal(0, 1, 3))
    for k in (1, 2):
        _add(buf, "map", "odom", k * S, T[f"odom@{k}"])
        _add(buf, "odom", "base_link", k * S, T[f"base@{k}"])
    _add(buf, "base_link", "camera_link", 0, T["cam"], static=True)
    _add(buf, "camera_link", "camera_optical", 0, T["optical"], static=True)
    _add(buf, "base_link", "arm", 0, T["arm"], static=True)
    return buf, T


def _interp(T0: np.ndarray, T1: np.ndarray, s: float) -> np.ndarray:
    rot = Slerp([0.0, 1.0], Rotation.from_matrix([T0[:3, :3], T1[:3, :3]]))([s])[0]
    return _T(rot, (1 - s) * T0[:3, 3] + s * T1[:3, 3])


def _check(got: tuple[np.ndarray, np.ndarray], T: np.ndarray) -> None:
    np.testing.assert_allclose(got[0], T[:3, :3], atol=1e-12)
    np.testing.assert_allclose(got[1], T[:3, 3], atol=1e-12)


def test_static_chain_holds_at_any_stamp_and_inverts():
    buf, T = _robot()
    T_base_optical = T["cam"] @ T["optical"]
    for stamp in (0, 5 * S, 10**18):  # static links: every stamp, no dynamic data needed
        _check(buf.lookup("base_link", "camera_optical", stamp), T_base_optical)
    _check(buf.lookup("camera_optical", "base_link", 7), np.linalg.inv(T_base_optical))
    # a branch: arm and camera meet at base_link
    _check(buf.lookup("arm", "camera_optical", 3), np.linalg.inv(T["arm"]) @ T_base_optical)
    _check(buf.lookup("arm", "arm", 3), np.eye(4))


@pytest.mark.parametrize("s", [0.0, 0.25, 0.7, 1.0])
def test_dynamic_links_are_interpolated_at_the_stamp(s):
    buf, T = _robot()
    stamp = S + int(s * S)
    expected = (_interp(T["odom@1"], T["odom@2"], s) @ _interp(T["base@1"], T["base@2"], s)
                @ T["cam"] @ T["optical"])
    got = buf.lookup("map", "camera_optical", stamp)
    np.testing.assert_allclose(got[0], expected[:3, :3], atol=1e-9)
    np.testing.assert_allclose(got[1], expected[:3, 3], atol=1e-9)


def test_extrapolation_missing_and_disconnected_frames_are_refused_by_name():
    buf, _ = _robot()
    with pytest.raises(TransformUnavailable, match=r"'camera_optical' to 'map' at 500000000 ns: "
                       r"link 'odom' -> 'base_link' .* before the oldest \(extrapolation into "
                       r"the past"):
        buf.lookup("map", "camera_optical", S // 2)
    with pytest.raises(TransformUnavailable, match=r"1000\.0 ms after the newest \(extrapolation "
                       r"into the future\) \(waited 0 s\)"):
        buf.lookup("map", "camera_optical", 3 * S)
    with pytest.raises(TransformUnavailable, match=r"'lidar' to 'map'.* not connected.*root of "
                       r"'lidar': 'lidar'"):
        buf.lookup("map", "lidar", S)
    assert isinstance(TransformUnavailable("x"), InputError)  # the node counts it as bad input


def test_lookup_waits_for_a_sample_after_the_stamp():
    buf, T = _robot()
    stamp = 2 * S + S // 2
    later = _T(Rotation.from_rotvec([0.0, 0.0, 0.3]), [1.0, 2.0, 3.0])

    def publish() -> None:
        time.sleep(0.2)
        _add(buf, "map", "odom", 3 * S, later)
        _add(buf, "odom", "base_link", 3 * S, T["base@2"])

    thread = threading.Thread(target=publish)
    t0 = time.monotonic()
    thread.start()
    got = buf.lookup("map", "base_link", stamp, timeout_s=5.0)
    thread.join()
    assert 0.15 < time.monotonic() - t0 < 4.0
    _check(got, _interp(T["odom@2"], later, 0.5) @ T["base@2"])


def test_cache_keeps_ten_seconds_behind_the_newest_and_replay_keeps_all():
    for cache_s, oldest_kept in ((10.0, 5), (None, 0)):
        buf = TransformBuffer(cache_s=cache_s)
        for k in range(16):
            buf.add("odom", "base_link", k * S, [0, 0, 0, 1], [k, 0, 0], static=False)
        with pytest.raises(TransformUnavailable) if oldest_kept else _nothing():
            buf.lookup("odom", "base_link", (oldest_kept - 1) * S if oldest_kept else 0)
        assert buf.lookup("odom", "base_link", oldest_kept * S)[1][0] == oldest_kept


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False


def test_bad_transforms_are_refused_and_a_new_parent_replaces_the_link():
    buf = TransformBuffer()
    for args in (("", "a"), ("a", "a")):
        with pytest.raises(InputError, match="two different, non-empty frame names"):
            buf.add(*args, 0, [0, 0, 0, 1], [0, 0, 0], static=True)
    with pytest.raises(InputError, match="finite non-zero quaternion"):
        buf.add("a", "b", 0, [0, 0, 0, 0], [0, 0, 0], static=True)
    with pytest.raises(InputError, match="finite non-zero quaternion"):
        buf.add("a", "b", 0, [0, 0, 0, 1], [np.nan, 0, 0], static=True)
    buf.add("a", "b", 0, [0, 0, 0, 2], [1, 0, 0], static=True)  # normalised
    _check(buf.lookup("a", "b", 0), _T(Rotation.identity(), [1, 0, 0]))
    buf.add("c", "b", 0, [0, 0, 0, 1], [0, 2, 0], static=True)  # b re-parented
    with pytest.raises(TransformUnavailable, match="not connected"):
        buf.lookup("a", "b", 0)
    buf.add("b", "c", 0, [0, 0, 0, 1], [0, 0, 0], static=True)
    with pytest.raises(TransformUnavailable, match="loop"):
        buf.lookup("a", "b", 0)


def _log_so3(R: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(R).as_rotvec()


def test_pose_in_frame_rotates_the_covariance_as_the_frame_change_does():
    """Reference: the Jacobian of (dt, dtheta) in the camera frame -> the same perturbation in
    the new frame, by finite differences of the composed poses."""
    rng = np.random.default_rng(4)
    R_obj, t_obj = Rotation.random(random_state=1).as_matrix(), np.array([0.1, -0.2, 0.8])
    A = rng.normal(size=(6, 6))
    cov = A @ A.T * 1e-4
    pose = ObjectPose("o", R_obj, t_obj, 0.9, cov, np.zeros((4, 2)), 4)
    R_fc, t_fc = Rotation.random(random_state=2).as_matrix(), np.array([0.5, 0.0, 1.2])
    out = pose_in_frame(pose, R_fc, t_fc)
    np.testing.assert_allclose(out.R, R_fc @ R_obj, atol=1e-12)
    np.testing.assert_allclose(out.t, R_fc @ t_obj + t_fc, atol=1e-12)
    eps, J = 1e-7, np.zeros((6, 6))
    for i in range(6):
        d = np.zeros(6)
        d[i] = eps
        R_p = Rotation.from_rotvec(d[3:]).as_matrix() @ R_obj  # left perturbation, camera axes
        moved = pose_in_frame(ObjectPose("o", R_p, t_obj + d[:3], 0.9, cov, np.zeros((4, 2)), 4),
                              R_fc, t_fc)
        J[:3, i] = (moved.t - out.t) / eps
        J[3:, i] = _log_so3(moved.R @ out.R.T) / eps
    np.testing.assert_allclose(out.covariance, J @ cov @ J.T, rtol=1e-5, atol=1e-12)
    assert out.score == 0.9 and out.keypoints_2d.shape == (4, 2)

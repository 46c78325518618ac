# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from dvc_perception.geometry.symmetry import (
    canonical_pose,
    symmetry_transforms,
    transforms_from_plain,
)

FLIP = np.eye(4)
FLIP[:3, :3] = Rotation.from_rotvec([0.0, 0.0, np.pi]).as_matrix()  # 2-fold about the z axis
FLIP[:3, 3] = [0.01, 0.0, 0.0]  # ... about an axis through (0.005, 0, 0)


def test_transforms_identity_first_and_continuous_sampling():
    only = symmetry_transforms([])
    assert len(only) == 1 and np.array_equal(only[0][0], np.eye(3))
    two = symmetry_transforms([FLIP])
    assert len(two) == 2 and np.allclose(two[1][0], FLIP[:3, :3]) and np.allclose(two[1][1],
                                                                                  FLIP[:3, 3])
    cont = symmetry_transforms([], [((0, 0, 1), (0.0, 0.0, 0.0))], max_step_rad=0.1)
    assert len(cont) == int(np.ceil(np.pi / 0.1)) and np.allclose(cont[0][0], np.eye(3))
    angles = [np.arctan2(R[1, 0], R[0, 0]) for R, _ in cont]
    assert np.allclose(np.diff(np.unwrap(angles)), 2 * np.pi / len(cont))
    plain = {"discrete": [FLIP.reshape(-1).tolist()], "continuous": []}
    assert all(np.allclose(a[0], b[0]) and np.allclose(a[1], b[1])
               for a, b in zip(transforms_from_plain(plain), two))


def test_canonical_pose_is_the_same_for_look_alike_poses():
    syms = symmetry_transforms([FLIP])
    rng = np.random.default_rng(0)
    for _ in range(50):
        R = Rotation.random(random_state=rng).as_matrix()
        t = rng.normal(size=3)
        R2, t2 = R @ FLIP[:3, :3], R @ FLIP[:3, 3] + t  # the same object surface in the camera
        a, b = canonical_pose(R, t, syms), canonical_pose(R2, t2, syms)
        np.testing.assert_allclose(a[0], b[0], atol=1e-12)
        np.testing.assert_allclose(a[1], b[1], atol=1e-12)
        assert np.trace(a[0]) >= max(np.trace(R), np.trace(R2)) - 1e-12
    R = Rotation.from_rotvec([0.0, 3.0, 0.0]).as_matrix()  # far from the identity
    same = canonical_pose(R, np.ones(3), symmetry_transforms([]))  # no symmetry: unchanged
    assert np.array_equal(same[0], R) and np.array_equal(same[1], np.ones(3))


def test_pose_dataset_targets_ignore_which_look_alike_pose_was_drawn():
    from dvc_perception.train.datasets import (
        Frame,
        ListFrameSource,
        ObjectAnnotation,
        ObjectInfo,
        PoseDataset,
    )

    kp = np.random.default_rng(1).uniform(-0.03, 0.03, (9, 3))
    info = ObjectInfo("sym", kp, 0.1, True, kp.copy(),
                      symmetries={"discrete": [FLIP.reshape(-1).tolist()], "continuous": []})
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    image = np.zeros((240, 320, 3), np.uint8)
    R = Rotation.from_rotvec([0.4, -0.3, 2.0]).as_matrix()
    t = np.array([0.01, -0.02, 0.5])
    look_alike = (R @ FLIP[:3, :3], R @ FLIP[:3, 3] + t)
    frames = ListFrameSource([Frame(image=image, K=K, objects=(ObjectAnnotation("sym", R, t),)),
                              Frame(image=image, K=K,
                                    objects=(ObjectAnnotation("sym", *look_alike),))])
    data = PoseDataset(frames, [info], 320, 240)
    a, b = data[0], data[1]
    for key in ("keypoints", "R", "t", "kp_in_image"):
        assert torch.equal(a[key], b[key]), key
    # and the keypoints are those of the canonical pose, projected
    Rc, tc = canonical_pose(R, t, symmetry_transforms([FLIP]))
    cam = kp @ Rc.T + tc
    uv = (cam @ K.T)[:, :2] / cam[:, 2:]
    np.testing.assert_allclose(a["keypoints"][0].numpy(), uv, atol=1e-3)

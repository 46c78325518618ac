# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""A tiny procedural scene (a cube with coloured corner dots) for tests and smoke runs.

Independent of the renderer, drawn with OpenCV. The cube's 8 corners and its centre are the 3D
keypoints; each visible face is filled with a flat shade and each visible corner is a disc of
its own colour, so a network can learn the keypoints from a handful of frames. Keypoint
visibility: a corner is visible when a front face uses it; the centre never is. The depth map is
exact for the background plane and the cube's centre depth on the cube (good enough for smoke
tests, not for accuracy claims).
"""

from __future__ import annotations

import cv2
import numpy as np

from dvc_perception.train.datasets import Frame, ObjectAnnotation, ObjectInfo

_CORNER_COLOURS = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255],
     [255, 128, 0], [128, 0, 255]],
    dtype=np.uint8,
)
_FACES = ((0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3))


def toy_object(object_id: str = "toy_cube", half_size_m: float = 0.05) -> ObjectInfo:
    """The toy cube: 8 corners + centre as keypoints, its surface sampled for ADD."""
    s = half_size_m
    corners = np.array(
        [[x, y, z] for x in (-s, s) for y in (-s, s) for z in (-s, s)], dtype=np.float64
    )
    keypoints = np.vstack([corners, np.zeros((1, 3))])
    g = np.linspace(-s, s, 5)
    surface = np.array(
        [p for a in g for b in g for p in ((a, b, -s), (a, b, s), (a, -s, b), (a, s, b),
                                           (-s, a, b), (s, a, b))], dtype=np.float64
    )
    return ObjectInfo(
        object_id=object_id, keypoints_obj=keypoints, diameter_m=float(2 * s * np.sqrt(3)),
        symmetric=False, points_obj=np.unique(surface, axis=0), symmetries=None,
    )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def toy_frames(
    n: int, *, width: int = 128, height: int = 96, seed: int = 0, obj: ObjectInfo | None = None,
    distance_m: tuple[float, float] = (0.35, 0.5),
) -> list[Frame]:
    """`n` frames of the toy cube at random poses.

    Args:
        n: number of frames.
        width: image width px.
        height: image height px.
        seed: random seed (frames are reproducible).
        obj: the object (default `toy_object()`); its first 8 keypoints are the cube corners.
        distance_m: range of the cube centre's depth [m].

    Returns:
        Frames with image, K (fx = fy = 1.1 * width), depth and one annotated object.
    """
    obj = obj or toy_object()
    rng = np.random.default_rng(seed)
    f = 1.1 * width
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    frames = []
    for _ in range(n):
        R = _random_rotation(rng)
        z = rng.uniform(*distance_m)
        t = np.array([rng.uniform(-0.15, 0.15) * z, rng.uniform(-0.1, 0.1) * z, z])
        # background: a plane facing the camera at 1.2 m, slightly tilted, with noise texture
        vv, uu = np.mgrid[0:height, 0:width].astype(np.float64)
        bg_depth = 1.2 + 0.2 * (vv / height) + 0.1 * (uu / width)
        image = (rng.uniform(60, 140, size=(height, width, 1)) * np.ones(3)).astype(np.uint8)
        depth = bg_depth.astype(np.float32)
        cam = obj.keypoints_obj @ R.T + t
        uv = (cam @ K.T)[:, :2] / cam[:, 2:]
        mask = np.zeros((height, width), np.uint8)
        normals_cam = []
        for face in _FACES:
            c = cam[list(face)].mean(axis=0)
            normals_cam.append(c - t)
        order = np.argsort([-cam[list(face), 2].mean() for face in _FACES])
        for i in order:
            face = _FACES[i]
            n_out = normals_cam[i]
            if np.dot(n_out, cam[list(face)].mean(axis=0)) >= 0:  # back face
                continue
            shade = int(80 + 150 * abs(n_out[2]) / (np.linalg.norm(n_out) + 1e-9))
            poly = np.rint(uv[list(face)] * 16).astype(np.int32)
            cv2.fillConvexPoly(image, poly, (shade, shade // 2, 40), lineType=cv2.LINE_AA,
                               shift=4)
            cv2.fillConvexPoly(mask, poly, 1, shift=4)
        depth[mask > 0] = t[2]
        visible = np.zeros(len(obj.keypoints_obj), bool)
        for k in range(8):
            # a corner is visible when a front face uses it
            front = [
                i for i, face in enumerate(_FACES)
                if k in face and np.dot(normals_cam[i], cam[list(face)].mean(axis=0)) < 0
            ]
            if front:
                visible[k] = True
                centre = tuple(int(v) for v in np.rint(uv[k] * 16))
                colour = tuple(int(c) for c in _CORNER_COLOURS[k])
                cv2.circle(image, centre, 3 * 16, colour, -1, lineType=cv2.LINE_AA, shift=4)
        ann = ObjectAnnotation(object_id=obj.object_id, R=R, t=t, mask=mask.astype(bool),
                               keypoints_visible=visible)
        frames.append(Frame(image=image, K=K.copy(), depth=depth, objects=(ann,)))
    return frames

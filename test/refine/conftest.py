# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic frames for the refiner tests: the hard renderer with textures, over a random
background, with noise and an occluder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import torch

from dvc_perception.geometry.camera import CameraModel
from dvc_perception.geometry.so3 import rotvec_to_matrix
from dvc_perception.refine import ContourModel, build_contour_model
from dvc_perception.render.mesh import Mesh
from dvc_perception.render.objects import ObjectDescription, find_object_yaml, load_object
from dvc_perception.render.raster import render

WIDTH, HEIGHT = 640, 480
K = np.array([[572.4, 0.0, 325.3], [0.0, 573.6, 242.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class Frame:
    """image (H, W, 3) uint8 RGB, the true pose, its silhouette (H, W) bool, the camera."""

    image: np.ndarray
    R: np.ndarray
    t: np.ndarray
    mask: np.ndarray
    camera: CameraModel


def camera() -> CameraModel:
    return CameraModel(K, [], WIDTH, HEIGHT)


def silhouette(mesh: Mesh, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(H, W) bool hard-render silhouette of `mesh` at (R, t)."""
    out = render(mesh, (torch.from_numpy(R), torch.from_numpy(t)), torch.from_numpy(K),
                 WIDTH, HEIGHT, shade=False)
    return out.mask.numpy()


def make_frame(mesh: Mesh, seed: int, *, occluder: bool = True, noise: float = 3.0) -> Frame:
    """The textured mesh at a random pose ~0.45 m away over smooth random colours."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    R = rotvec_to_matrix(torch.from_numpy(axis / np.linalg.norm(axis) * rng.uniform(0, np.pi))
                         ).numpy()
    t = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.04, 0.04), rng.uniform(0.4, 0.5)])
    res = render(mesh, (torch.from_numpy(R), torch.from_numpy(t)), torch.from_numpy(K), WIDTH,
                 HEIGHT)
    mask = res.mask.numpy()
    bg = cv2.resize(rng.uniform(0.1, 0.9, (7, 9, 3)), (WIDTH, HEIGHT),
                    interpolation=cv2.INTER_CUBIC)
    img = np.where(mask[..., None], res.color.numpy(), bg)
    if occluder:  # a flat patch over one side of the object (~15 % of its box)
        ys, xs = np.nonzero(mask)
        w, h = xs.max() - xs.min(), ys.max() - ys.min()
        x0 = int(xs.min() + rng.uniform(-0.2, 0.8) * w)
        y0 = int(ys.max() - 0.3 * h)
        img[y0:y0 + int(0.5 * h), x0:x0 + int(0.35 * w)] = rng.uniform(0.1, 0.9, 3)
    img = np.clip(img * 255.0 + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8)
    return Frame(img, R, t, mask, camera())


def perturb(R: np.ndarray, t: np.ndarray, deg: float, offset_m: float, seed: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(exp(deg a) R, t + offset_m u)`` with uniform unit vectors a, u."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=3)
    u = rng.normal(size=3)
    dR = rotvec_to_matrix(torch.from_numpy(np.deg2rad(deg) * a / np.linalg.norm(a))).numpy()
    return dR @ R, t + offset_m * u / np.linalg.norm(u)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="session")
def demo_object() -> ObjectDescription:
    """The shipped textured demo object (0.10 m), mesh in float64."""
    obj = load_object(find_object_yaml("demo_object"))
    return dataclasses.replace(obj, mesh=obj.mesh.to(dtype=torch.float64))


@pytest.fixture(scope="session")
def demo_model(demo_object: ObjectDescription) -> ContourModel:
    """Its sparse viewpoint model (162 views; the default 642 is for run time)."""
    return build_contour_model(demo_object.mesh, subdivisions=2, image_size_px=256)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Synthetic camera sequences in rooms, with exact depth (ROS-free), for the depth refiner.

A room is a box of textured planes (floor, four walls, ceiling; world frame: x forward, y left,
z up, floor at z = 0) with a few textured boxes standing on the floor (furniture) and a few
slanted panels. Each surface gets procedural grey-ish noise at two or three scales with a
random contrast (nearly half the surfaces almost blank, as painted walls and cupboard doors
are: the classical depth has holes and wrong matches there), its finest blob 1.5-4 px at a
typical viewing distance (1.2 m): the renderer samples a texture once per pixel without
mip-mapping, so finer texture aliases and looks different from two viewpoints. Nearer, the
texture is only coarser; beyond ~3 m the finest scale aliases somewhat (the coarser two do
not), as a compromise between near and far surfaces. Rendering is unlit (``shade=False``): a
surface point looks the same from every viewpoint, as the plane sweep assumes; each frame gets
a small global gain and Gaussian noise, some sequences a slight blur (focus, motion).

The camera moves like a robot's: at 0.5-1.5 m height, mostly forward with some sideways drift,
1-5 cm per frame, turning slowly (yaw) with a small pitch wobble, kept inside the room.
`room_sequence(seed)` is deterministic in its seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.render.mesh import Mesh, mesh_from_arrays

#: Camera optical frame (x right, y down, z forward) in a body frame (x forward, y left, z up).
_R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class RoomFrame:
    """One rendered frame.

    Attributes:
        rgb: (H, W, 3) uint8.
        K: (3, 3) float64 pinhole intrinsics [px].
        camera_to_world: (4, 4) float64, the optical frame in the room's world frame [m].
        depth: (H, W) float32 true z depth [m] (0 where nothing was hit; never, inside a room).
    """

    rgb: np.ndarray
    K: np.ndarray
    camera_to_world: np.ndarray
    depth: np.ndarray


def _texture(rng: np.random.Generator, shape: tuple[int, int], sigma_texels: float,
             contrast: float) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: blobs of `sigma_texels`, 3x and 9x that, tinted grey."""
    h, w = shape
    t = np.zeros((h, w), np.float32)
    for k, weight in ((1.0, 1.0), (3.0, 1.5), (9.0, 1.0)):
        s = sigma_texels * k
        if s > max(h, w) / 3:
            continue
        t += weight * cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), s)
    t = cv2.normalize(t, None, -1.0, 1.0, cv2.NORM_MINMAX)
    base = rng.uniform(0.25, 0.75)
    tint = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    out = np.clip((base + 0.5 * contrast * t)[..., None] * tint, 0.02, 0.98)
    return out.astype(np.float32)


def _surface_texture(rng: np.random.Generator, size_m: tuple[float, float],
                     nearest_m: float, focal_px: float) -> np.ndarray:
    """A texture for a (width, height) m surface seen from `nearest_m` or farther.

    The finest blob is 1.5-4 px at `nearest_m`; the texture has 2 texels per finest sigma,
    capped at 1024 texels a side (coarser blobs then, never finer).
    """
    sigma_m = rng.uniform(1.5, 4.0) * nearest_m / focal_px
    texel_m = max(sigma_m / 2.0, max(size_m) / 1024.0)
    shape = (max(8, int(np.ceil(size_m[1] / texel_m))), max(8, int(np.ceil(size_m[0] / texel_m))))
    contrast = rng.choice([rng.uniform(0.01, 0.1), rng.uniform(0.15, 1.0)], p=[0.45, 0.55])
    return _texture(rng, shape, max(sigma_m / texel_m, 1.0), float(contrast))


def _quad(corners: np.ndarray, texture: np.ndarray, name: str, cell_m: float = 0.25) -> Mesh:
    """A textured quad: `corners` (4, 3) m in order (uv (0,1), (1,1), (1,0), (0,0)).

    Tessellated into cells of about `cell_m`: the rasteriser drops a triangle with a vertex
    behind the camera, so a floor or wall made of two triangles would vanish near the camera.
    """
    c = np.asarray(corners, float)
    nu = max(1, int(np.ceil(np.linalg.norm(c[1] - c[0]) / cell_m)))
    nv = max(1, int(np.ceil(np.linalg.norm(c[3] - c[0]) / cell_m)))
    s, t = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1))  # (nv+1, nu+1)
    s, t = s.ravel()[:, None], t.ravel()[:, None]
    vertices = ((1 - s) * (1 - t) * c[0] + s * (1 - t) * c[1] + s * t * c[2]
                + (1 - s) * t * c[3])
    uv = np.concatenate([s, 1 - t], axis=1)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, d, e = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3),
                            np.stack([a, d, e], -1).reshape(-1, 3)])
    return mesh_from_arrays(vertices, faces, uv=uv, texture=texture, name=name)


def _box(rng: np.random.Generator, centre: np.ndarray, half: np.ndarray, yaw: float,
         focal_px: float, nearest_m: float) -> list[Mesh]:
    """Five textured faces (no bottom) of a box with half sizes `half` (3,) m, turned `yaw`."""
    c = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half
    cy, sy = np.cos(yaw), np.sin(yaw)
    R = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    c = c @ R.T + centre
    # corner index = 4 x + 2 y + z (x, y, z in {0, 1}); quads ordered for the uv of `_quad`
    quads = [(1, 5, 7, 3), (4, 5, 7, 6), (0, 1, 3, 2), (0, 4, 5, 1), (2, 3, 7, 6)]  # no bottom
    meshes = []
    for k, q in enumerate(quads):
        corners = c[list(q)]
        size = (float(np.linalg.norm(corners[1] - corners[0])),
                float(np.linalg.norm(corners[3] - corners[0])))
        meshes.append(_quad(corners, _surface_texture(rng, size, nearest_m, focal_px),
                            f"box_face{k}"))
    return meshes


def room_meshes(rng: np.random.Generator, focal_px: float
                ) -> tuple[list[Mesh], tuple[float, float, float]]:
    """A random room: meshes and its (length x, width y, height z) m (x in [0, L], |y| <= W/2)."""
    L, W, Hr = rng.uniform(3.5, 6.0), rng.uniform(3.0, 5.0), rng.uniform(2.3, 3.0)
    y0, y1 = -W / 2, W / 2
    near = 1.2  # typical distance: nearer looks blurrier, farther aliases a little
    planes = {
        "floor": [[0, y0, 0], [L, y0, 0], [L, y1, 0], [0, y1, 0]],
        "ceiling": [[0, y1, Hr], [L, y1, Hr], [L, y0, Hr], [0, y0, Hr]],
        "wall_front": [[L, y0, 0], [L, y1, 0], [L, y1, Hr], [L, y0, Hr]],
        "wall_back": [[0, y1, 0], [0, y0, 0], [0, y0, Hr], [0, y1, Hr]],
        "wall_left": [[L, y1, 0], [0, y1, 0], [0, y1, Hr], [L, y1, Hr]],
        "wall_right": [[0, y0, 0], [L, y0, 0], [L, y0, Hr], [0, y0, Hr]],
    }
    meshes = []
    for name, corners in planes.items():
        corners = np.asarray(corners, float)
        size = (float(np.linalg.norm(corners[1] - corners[0])),
                float(np.linalg.norm(corners[3] - corners[0])))
        meshes.append(_quad(corners, _surface_texture(rng, size, near, focal_px), name))
    for _ in range(int(rng.integers(2, 6))):  # furniture on the floor
        half = np.array([rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.4), rng.uniform(0.1, 0.45)])
        centre = np.array([rng.uniform(1.8, L - 0.3), rng.uniform(y0 + 0.3, y1 - 0.3), half[2]])
        meshes += _box(rng, centre, half, rng.uniform(0, np.pi), focal_px, near)
    for k in range(int(rng.integers(0, 3))):  # slanted panels (pictures, doors ajar, screens)
        cx, cy_, cz = rng.uniform(2.0, L - 0.3), rng.uniform(y0 + 0.5, y1 - 0.5), \
            rng.uniform(0.4, 1.8)
        a, b = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5)
        yaw = rng.uniform(0, np.pi)
        u = np.array([-np.sin(yaw), np.cos(yaw), 0.0]) * a
        v = np.array([0.0, 0.0, 1.0]) * b
        c = np.array([cx, cy_, cz])
        corners = np.array([c - u - v, c + u - v, c + u + v, c - u + v])
        meshes.append(_quad(corners, _surface_texture(rng, (2 * a, 2 * b), near, focal_px),
                            f"panel{k}"))
    return meshes, (L, W, Hr)


def robot_trajectory(rng: np.random.Generator, frames: int, room: tuple[float, float, float]
                     ) -> np.ndarray:
    """(frames, 4, 4) camera-to-world poses of a camera on a robot driving through `room`."""
    L, W, _ = room
    height = rng.uniform(0.5, 1.5)
    speed = rng.uniform(0.01, 0.05)  # m per frame
    side = rng.uniform(-0.4, 0.4)  # sideways share of the motion
    yaw = rng.uniform(-0.4, 0.4)
    yaw_rate = np.radians(rng.uniform(-0.6, 0.6))
    pitch0 = np.radians(rng.uniform(-12.0, 5.0))
    wobble = np.radians(rng.uniform(0.0, 2.0))
    travel = speed * frames
    x = rng.uniform(0.3, max(0.4, min(1.2, L - 2.5 - travel)))
    y = rng.uniform(-W / 2 + 0.6, W / 2 - 0.6)
    poses = np.zeros((frames, 4, 4))
    phase = rng.uniform(0, 2 * np.pi)
    for k in range(frames):
        pitch = pitch0 + wobble * np.sin(phase + 0.3 * k)
        cyw, syw, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        R_yaw = np.array([[cyw, -syw, 0], [syw, cyw, 0], [0, 0, 1]])
        R_pitch = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])  # about body y: nose down
        T = np.eye(4)
        T[:3, :3] = R_yaw @ R_pitch @ _R_BODY_OPTICAL
        T[:3, 3] = [x, y, height]
        poses[k] = T
        step = speed * rng.uniform(0.8, 1.2)
        direction = np.array([np.cos(yaw), np.sin(yaw)]) + side * np.array([-np.sin(yaw),
                                                                            np.cos(yaw)])
        direction /= np.linalg.norm(direction)
        x = float(np.clip(x + step * direction[0], 0.3, L - 0.6))
        y = float(np.clip(y + step * direction[1], -W / 2 + 0.3, W / 2 - 0.3))
        yaw += yaw_rate + np.radians(rng.normal(0.0, 0.1))
    return poses


def room_sequence(seed: int, frames: int = 20, width: int = 320, height: int = 240
                  ) -> list[RoomFrame]:
    """`frames` frames of a random room and robot trajectory (deterministic in `seed`).

    The focal length is 0.75-1.0 x the width (horizontal field of view about 53-67 deg), the
    principal point at the image centre.
    """
    import torch

    from dvc_perception.render.raster import render

    rng = np.random.default_rng(seed)
    f = rng.uniform(0.75, 1.0) * width
    K = np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    meshes, room = room_meshes(rng, f)
    meshes = [m.to(dtype=torch.float64) for m in meshes]
    poses = robot_trajectory(rng, frames, room)
    gain0 = rng.uniform(0.8, 1.2)
    noise = rng.uniform(0.5, 4.0)
    blur = rng.choice([0.0, rng.uniform(0.4, 1.2)])
    out = []
    for T in poses:
        T_cam_world = torch.from_numpy(np.linalg.inv(T))
        r = render(meshes, T_cam_world.expand(len(meshes), 4, 4), torch.from_numpy(K), width,
                   height, shade=False)
        colour = r.color.numpy() * gain0 * rng.uniform(0.95, 1.05)
        if blur > 0:
            colour = cv2.GaussianBlur(colour, (0, 0), blur)
        rgb = np.clip(colour * 255.0 + rng.normal(0.0, noise, colour.shape) + 0.5, 0, 255)
        out.append(RoomFrame(rgb.astype(np.uint8), K.copy(), T.copy(),
                             r.depth.numpy().astype(np.float32)))
    return out

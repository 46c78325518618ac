# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Rasterizer: a hard z-buffer renderer and a DIB-R-style differentiable ("soft") mode.

Both modes share one vectorised torch rasterizer: every triangle's pixel bounding box is
expanded into (pixel, face) candidates (bounding-box culling, no per-pixel loop over faces),
screen-space barycentrics select the covered candidates, and a scatter-min over perspective-
correct depth is the z-buffer. Pixel centres are at integer coordinates: pixel (0, 0) is the
centre of the top-left pixel, as in OpenCV and ROS CameraInfo.

The soft mode follows DIB-R (Chen et al., "Learning to Predict 3D Objects with an
Interpolation-based Differentiable Renderer", NeurIPS 2019): covered pixels take depth, colour
and shading interpolated with barycentric weights that are differentiable functions of the
projected vertices (hence of vertices, R and t); uncovered pixels near the silhouette get a soft
coverage ``1 - prod_f (1 - exp(-d_f^2 / sigma^2))`` from their distance ``d_f`` to nearby faces.
Which face is visible at a pixel is a discrete (non-differentiable) choice, as in DIB-R.

Faces with a vertex closer than ``znear`` are dropped (not clipped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dvc_perception.errors import (
    ConfigError,
    EngineUnavailableError,
    InputError,
    ShapeError,
    check_shape,
)
from dvc_perception.render.mesh import Mesh

_DEFAULT_GREY = 0.7


@dataclass(frozen=True)
class Lighting:
    """Lambertian + Blinn-Phong lighting with directional lights.

    Colour of a fragment with unit normal ``n``, albedo ``a`` and unit direction ``v`` from the
    fragment to the camera (at the origin)::

        a * (ambient + diffuse * max(0, n . l) + sum_i intensity_i * max(0, n . l_i))
          + specular * sum_{all lights} max(0, n . h)^shininess,   h = normalise(l + v)

    clamped to [0, 1]; ``l`` is the main light, ``l_i`` the extra lights. The highlight is
    white and unweighted by the light's intensity (Blinn, "Models of light reflection for
    computer synthesized pictures", SIGGRAPH 1977). With the defaults (``specular = 0``, no
    extra lights) the shading is exactly ``a * (ambient + diffuse * max(0, n . l))``.

    Attributes:
        ambient: ambient term, >= 0.
        diffuse: directional term of the main light, >= 0.
        direction_cam: direction from the surface towards the main light, camera optical
            frame (x right, y down, z forward); normalised internally. The default lights from
            above and from the camera side.
        specular: weight of the white Blinn-Phong highlight of every light, >= 0 (0: none).
        shininess: Blinn-Phong exponent, >= 1 (larger: smaller, sharper highlights; below 1
            the highlight's gradient would be infinite at its edge).
        extra_lights: further directional lights, each ``(dx, dy, dz, intensity)``: direction
            from the surface towards the light (camera optical frame, normalised internally)
            and diffuse intensity >= 0.
    """

    ambient: float = 0.5
    diffuse: float = 0.6
    direction_cam: tuple[float, float, float] = (0.3, -0.6, -1.0)
    specular: float = 0.0
    shininess: float = 20.0
    extra_lights: tuple[tuple[float, float, float, float], ...] = ()

    def __post_init__(self) -> None:
        for name in ("ambient", "diffuse", "specular"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"lighting {name} must be finite and >= 0, got {value}")
        if not math.isfinite(self.shininess) or self.shininess < 1:
            raise ConfigError(f"lighting shininess must be finite and >= 1, got {self.shininess}")
        _check_direction(self.direction_cam, "lighting direction")
        for k, light in enumerate(self.extra_lights):
            if len(light) != 4:
                raise ConfigError(
                    f"lighting extra_lights[{k}]: expected (dx, dy, dz, intensity), got {light}"
                )
            _check_direction(light[:3], f"lighting extra_lights[{k}] direction")
            if not math.isfinite(light[3]) or light[3] < 0:
                raise ConfigError(
                    f"lighting extra_lights[{k}] intensity must be finite and >= 0, got {light[3]}"
                )

    @property
    def is_lambertian(self) -> bool:
        """No highlight and no extra light of non-zero intensity: ``a (ambient + diffuse n.l)``."""
        return self.specular == 0 and all(light[3] == 0 for light in self.extra_lights)


def _check_direction(direction: Sequence[float], name: str) -> None:
    """Raise ConfigError unless `direction` is 3 finite numbers, not all zero."""
    if (
        len(direction) != 3
        or not all(math.isfinite(c) for c in direction)
        or sum(c * c for c in direction) <= 0
    ):
        raise ConfigError(f"{name} must be 3 finite numbers, not all zero, got {direction}")


@dataclass(frozen=True)
class SoftSettings:
    """Settings of the differentiable mode.

    Attributes:
        sigma_px: width of the soft silhouette falloff ``exp(-d^2 / sigma^2)`` [px].
        margin_sigmas: faces influence uncovered pixels up to ``margin_sigmas * sigma_px`` away.
    """

    sigma_px: float = 1.0
    margin_sigmas: float = 3.0

    def __post_init__(self) -> None:
        if self.sigma_px <= 0 or self.margin_sigmas <= 0:
            raise ConfigError(
                f"soft settings must be > 0, got sigma_px={self.sigma_px}, "
                f"margin_sigmas={self.margin_sigmas}"
            )


@dataclass(frozen=True)
class RenderResult:
    """One rendered image.

    Attributes:
        color: (H, W, 3) float RGB in [0, 1], shaded; `background` where nothing is hit.
        depth: (H, W) float, metres along the optical axis (z), NaN where nothing is hit
            (REP 118).
        mask: (H, W) hard mode: bool coverage; soft mode: float silhouette in [0, 1].
        instance_ids: (H, W) int64 index of the visible mesh in the `meshes` list, -1 for none.
        face_ids: (H, W) int64 index of the visible face within its mesh, -1 for none.
    """

    color: Tensor
    depth: Tensor
    mask: Tensor
    instance_ids: Tensor
    face_ids: Tensor


def poses_to_rt(poses: Tensor | Sequence[Tensor], num_meshes: int) -> tuple[Tensor, Tensor]:
    """Normalise poses to ``R (M, 3, 3)``, ``t (M, 3)`` (object-in-camera, metres).

    Args:
        poses: (M, 4, 4) or (4, 4) homogeneous ``T_cam_obj``, or a pair ``(R, t)`` with R
            (M, 3, 3) / (3, 3) and t (M, 3) / (3,).
        num_meshes: M, the number of meshes.

    Raises:
        ShapeError: wrong shapes or a count different from `num_meshes`.
    """
    if isinstance(poses, Tensor):
        T = poses.unsqueeze(0) if poses.dim() == 2 else poses
        check_shape(T, f"{num_meshes},4,4", name="poses")
        return T[:, :3, :3], T[:, :3, 3]
    if len(poses) != 2:
        raise ShapeError(f"poses: expected a (M,4,4) tensor or a pair (R, t), got {len(poses)}")
    R, t = poses
    R = R.unsqueeze(0) if R.dim() == 2 else R
    t = t.unsqueeze(0) if t.dim() == 1 else t
    check_shape(R, f"{num_meshes},3,3", name="R")
    check_shape(t, f"{num_meshes},3", name="t")
    return R, t


@dataclass(frozen=True)
class _Scene:
    """All meshes concatenated into one vertex / face list in the camera optical frame.

    Attributes:
        vertices: (V, 3) vertex positions [m], camera optical frame.
        faces: (F, 3) int64 indices into `vertices`.
        attrs: (V, 8) per-vertex attributes: albedo RGB in [0, 1], camera-frame normal, uv.
        face_mesh: (F,) int64 index of each face's mesh in the `meshes` list.
        face_offsets: index of each mesh's first face in `faces`.
    """

    vertices: Tensor
    faces: Tensor
    attrs: Tensor
    face_mesh: Tensor
    face_offsets: list[int]


@dataclass(frozen=True)
class _Fragments:
    """The visible surface at the P covered pixels of the hard visibility pass.

    Attributes:
        covered: (H * W,) bool, row-major: some face is visible at the pixel.
        pix: (P,) int64 row-major index of each covered pixel.
        face: (P,) int64 visible face, an index into `_Scene.faces`.
        mesh: (P,) int64 mesh of the visible face.
        depth: (P,) perspective-correct depth [m] along the optical axis.
        attrs: (P, 8) perspective-correct interpolation of `_Scene.attrs`.
    """

    covered: Tensor
    pix: Tensor
    face: Tensor
    mesh: Tensor
    depth: Tensor
    attrs: Tensor


def render(
    meshes: Mesh | Sequence[Mesh],
    poses: Tensor | Sequence[Tensor],
    K: Tensor,
    width: int,
    height: int,
    *,
    soft: bool = False,
    lighting: Lighting = Lighting(),  # noqa: B008 - frozen, hence immutable
    soft_settings: SoftSettings = SoftSettings(),  # noqa: B008 - frozen, hence immutable
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    znear: float = 0.01,
    shade: bool = True,
    backend: str = "auto",
) -> RenderResult:
    """Render meshes at object-in-camera poses with a pinhole camera.

    Args:
        meshes: M meshes (metres, object frames), or one mesh.
        poses: object-in-camera poses ``X_cam = R @ X_obj + t``: (M, 4, 4) or a pair
            ``(R (M, 3, 3), t (M, 3) m)``; unbatched forms for one mesh.
        K: (3, 3) pinhole intrinsics [px] (undistorted image).
        width: image width W [px].
        height: image height H [px].
        soft: the differentiable DIB-R-style mode (gradients w.r.t. vertices, R, t).
        lighting: ambient, directional Lambertian and Blinn-Phong lighting (`Lighting`).
        soft_settings: silhouette falloff of the soft mode.
        background: RGB in [0, 1] where nothing is hit.
        znear: faces with a vertex nearer than this [m] are dropped.
        shade: apply lighting; False returns the unlit albedo (vertex colour / texture).
        backend: visibility pass of the hard mode: "torch" (vectorised, any device), "numba"
            (compiled, CPU; see `raster_numba`) or "auto" (numba for hard CPU renders where
            it is installed, else torch). The soft mode always uses torch.

    Returns:
        A `RenderResult`; tensors on the meshes' device, floats in the vertices' dtype.

    Raises:
        ShapeError: wrong pose / intrinsics shapes.
        InputError: no meshes, non-positive image size, meshes on different devices.
        ConfigError: unknown backend, or "numba" with soft=True or a non-CPU device.
        EngineUnavailableError: backend "numba" without numba installed.
    """
    mesh_list = _checked_meshes(meshes, K, width, height)
    device, dtype = mesh_list[0].vertices.device, mesh_list[0].vertices.dtype
    use_numba = _use_numba(backend, soft, device)
    R, t = poses_to_rt(poses, len(mesh_list))
    R, t, K = R.to(device, dtype), t.to(device, dtype), K.to(device, dtype)
    scene = _scene_in_camera(mesh_list, R, t)
    px, z = _project(scene.vertices, K)
    if use_numba:
        return _render_numba(
            mesh_list, scene, px, z, K, width, height, lighting, background, znear, shade
        )
    # Visibility is a discrete choice without gradients: the soft mode may take it from numba.
    vis_backend = "auto" if soft and backend == "auto" else "torch"
    face_buf = rasterize(
        px.detach(), z.detach(), scene.faces, width, height, znear=znear, backend=vis_backend
    ).to(device)
    frags = _visible_fragments(face_buf, px, z, scene, width)
    colour = _fragment_colour(mesh_list, frags, lighting, shade, K, width)
    if soft:
        mask = _soft_silhouette(
            px, z, scene.faces, frags.covered, width, height, znear, soft_settings
        )
    else:
        mask = frags.covered
    return _composite(frags, colour, mask, scene.face_offsets, background, width, height)


def _checked_meshes(
    meshes: Mesh | Sequence[Mesh], K: Tensor, width: int, height: int
) -> list[Mesh]:
    """Check the inputs of `render` and return the meshes as a non-empty list.

    Raises:
        InputError: no meshes, non-positive image size, meshes on different devices.
        ShapeError: `K` is not (3, 3).
    """
    mesh_list = [meshes] if isinstance(meshes, Mesh) else list(meshes)
    if not mesh_list:
        raise InputError("render: expected at least one mesh, got none")
    if width <= 0 or height <= 0:
        raise InputError(f"render: image size must be positive, got {width}x{height}")
    check_shape(K, "3,3", name="K")
    device = mesh_list[0].vertices.device
    if any(m.vertices.device != device for m in mesh_list):
        raise InputError("render: all meshes must be on the same device")
    return mesh_list


def _scene_in_camera(meshes: list[Mesh], R: Tensor, t: Tensor) -> _Scene:
    """Move every mesh into the camera frame and concatenate them into one `_Scene`.

    Args:
        meshes: M meshes (metres, object frames).
        R: (M, 3, 3) object-to-camera rotations, in the render dtype and device.
        t: (M, 3) object origins in the camera frame [m].

    Returns:
        The concatenated scene; vertices, normals and albedo in the dtype of `R`. Meshes
        without normals get zero normals; without vertex colours, a grey albedo (white under
        a texture).
    """
    dtype, device = R.dtype, R.device
    verts_cam, faces, normals_cam, albedo, uvs, face_mesh, offsets = [], [], [], [], [], [], []
    v_off = 0
    f_off = 0
    for i, m in enumerate(meshes):
        verts_cam.append(m.vertices.to(dtype) @ R[i].transpose(0, 1) + t[i])
        faces.append(m.faces + v_off)
        n = m.normals if m.normals is not None else torch.zeros_like(m.vertices)
        normals_cam.append(n.to(dtype) @ R[i].transpose(0, 1))
        if m.vertex_colors is not None:
            albedo.append(m.vertex_colors.to(dtype))
        else:
            grey = 1.0 if m.texture is not None else _DEFAULT_GREY
            albedo.append(torch.full_like(m.vertices, grey, dtype=dtype))
        uvs.append(m.uv.to(dtype) if m.uv is not None else m.vertices.new_zeros(m.num_vertices, 2))
        face_mesh.append(torch.full((m.num_faces,), i, dtype=torch.long, device=device))
        offsets.append(f_off)
        v_off += m.num_vertices
        f_off += m.num_faces
    return _Scene(
        vertices=torch.cat(verts_cam),
        faces=torch.cat(faces),
        attrs=torch.cat([torch.cat(albedo), torch.cat(normals_cam), torch.cat(uvs)], dim=1),
        face_mesh=torch.cat(face_mesh),
        face_offsets=offsets,
    )


def _project(vertices: Tensor, K: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of (V, 3) camera-frame points [m] with (3, 3) `K` [px].

    Returns:
        ``px`` (V, 2) image coordinates [px] (pixel centres at integers) and ``z`` (V,) depth
        [m] along the optical axis.
    """
    z = vertices[:, 2]
    uvw = vertices @ K.transpose(0, 1)
    px = uvw[:, :2] / uvw[:, 2:].clamp_min(1e-9)
    return px, z


def _visible_fragments(
    face_buf: Tensor, px: Tensor, z: Tensor, scene: _Scene, width: int
) -> _Fragments:
    """Interpolate depth and vertex attributes of the visible face at each covered pixel.

    Args:
        face_buf: (H * W,) int64 visible face per pixel, -1 for none (from `rasterize`).
        px: (V, 2) projected vertices [px] (differentiable).
        z: (V,) vertex depth [m] (differentiable).
        scene: the concatenated meshes.
        width: W [px].

    Returns:
        The fragments; screen-space barycentrics are perspective-corrected with 1/z, which is
        affine in screen space.
    """
    dtype = px.dtype
    covered = face_buf >= 0
    pix = covered.nonzero().squeeze(1)
    f_vis = face_buf[pix]
    tri = scene.faces[f_vis]  # (P, 3)
    xs = (pix % width).to(dtype)
    ys = torch.div(pix, width, rounding_mode="floor").to(dtype)
    b = _barycentric(px[tri], torch.stack([xs, ys], dim=-1))  # (P, 3) screen space
    w = b / z[tri]  # perspective correction: 1/z is affine in screen space
    inv_z = w.sum(dim=-1)
    depth_vis = 1.0 / inv_z
    w = w / inv_z.unsqueeze(-1)
    attr_vis = (w.unsqueeze(-1) * scene.attrs[tri]).sum(dim=1)
    return _Fragments(
        covered=covered,
        pix=pix,
        face=f_vis,
        mesh=scene.face_mesh[f_vis],
        depth=depth_vis,
        attrs=attr_vis,
    )


def _fragment_colour(
    meshes: list[Mesh], frags: _Fragments, lighting: Lighting, shade: bool, K: Tensor, width: int
) -> Tensor:
    """(P, 3) RGB in [0, 1] of the fragments: albedo x texture, then `_shade` if `shade`.

    `K` ((3, 3) px) and `width` (W px) give the view directions of a specular highlight.
    """
    colour_vis = frags.attrs[:, :3]
    if any(m.texture is not None for m in meshes):
        colour_vis = _apply_textures(meshes, frags.mesh, frags.attrs[:, 6:8], colour_vis)
    if shade:
        view = _view_directions(frags.pix, K, width) if lighting.specular > 0 else None
        colour_vis = _shade(colour_vis, frags.attrs[:, 3:6], lighting, view)
    return colour_vis


def _light_direction(lighting: Lighting, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(3,) unit vector towards the light, camera optical frame."""
    light = torch.tensor(lighting.direction_cam, dtype=dtype, device=device)
    return light / light.norm()


def _view_directions(pix: Tensor, K: Tensor, width: int) -> Tensor:
    """(P, 3) unit directions from the fragments to the camera centre, camera optical frame.

    A fragment lies on the ray through its pixel centre, so the direction is that ray's,
    reversed. pix: (P,) int64 row-major pixel indices; K: (3, 3) intrinsics [px]; width: W.
    """
    rows = torch.div(pix, width, rounding_mode="floor")
    xs, ys = (pix - rows * width).to(K.dtype), rows.to(K.dtype)
    K_inv = torch.linalg.inv(K)
    rays = [K_inv[i, 0] * xs + K_inv[i, 1] * ys + K_inv[i, 2] for i in range(3)]
    scale = -(rays[0] * rays[0] + rays[1] * rays[1] + rays[2] * rays[2]).rsqrt()
    return torch.stack([r * scale for r in rays], dim=-1)


def _shade(albedo: Tensor, normals: Tensor, lighting: Lighting, view: Tensor | None) -> Tensor:
    """Lit colour of `Lighting` (Lambert + extra lights + Blinn-Phong), clamped to [0, 1].

    Args:
        albedo: (P, 3) RGB in [0, 1].
        normals: (P, 3) interpolated camera-frame normals (normalised here).
        lighting: the lights.
        view: (P, 3) unit directions from the fragments to the camera (camera frame); needed
            only when ``lighting.specular > 0``.

    Returns:
        (P, 3) RGB in [0, 1]; exactly ``albedo * (ambient + diffuse * max(0, n . l))`` (then
        clamped) when `lighting` is Lambertian.
    """
    # No flipping of back-facing normals: it would make the colour discontinuous.
    dtype, device = albedo.dtype, albedo.device
    n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    light = _light_direction(lighting, dtype, device)
    lambert = (n @ light).clamp_min(0.0)
    k = lighting.ambient + lighting.diffuse * lambert
    if lighting.is_lambertian:
        return (albedo * k.unsqueeze(-1)).clamp(0.0, 1.0)
    # One (P,) vector per light: (P, 3) @ (3, L) matmuls with a small L are slow on the CPU.
    lights: list[tuple[Tensor, Tensor | None]] = [(light, None)]  # direction, n . l
    for dx, dy, dz, intensity in lighting.extra_lights:
        extra = torch.tensor([dx, dy, dz], dtype=dtype, device=device)
        extra = extra / extra.norm()
        n_l = n @ extra
        k = k + intensity * n_l.clamp_min(0.0)
        lights.append((extra, n_l))
    colour = albedo * k.unsqueeze(-1)
    if lighting.specular > 0:
        if view is None:
            raise InputError("_shade: a specular highlight needs the view directions")
        n_v = (n * view).sum(dim=-1)
        highlight = torch.zeros_like(k)
        for direction, n_l in lights:
            n_l = n @ direction if n_l is None else n_l
            # n . h with h = (l + v) / |l + v|, |l + v|^2 = 2 + 2 l . v (unit l and v); where
            # l = -v there is no half vector, and there n . (l + v) = 0.
            inv_half = (2.0 + 2.0 * (view @ direction)).clamp_min(1e-12).rsqrt()
            n_h = ((n_l + n_v) * inv_half).clamp_min(0.0)
            # shininess >= 1: the derivative of max(0, x)^s is finite at 0
            highlight = highlight + n_h.pow(lighting.shininess)
        colour = colour + lighting.specular * highlight.unsqueeze(-1)
    return colour.clamp(0.0, 1.0)


def _composite(
    frags: _Fragments,
    colour: Tensor,
    mask: Tensor,
    face_offsets: list[int],
    background: tuple[float, float, float],
    width: int,
    height: int,
) -> RenderResult:
    """Scatter the fragments into (H, W) images over the background.

    Args:
        frags: the visible surface.
        colour: (P, 3) RGB in [0, 1] of the fragments.
        mask: (H * W,) coverage: bool (hard) or float silhouette (soft).
        face_offsets: index of each mesh's first face, to make face ids mesh-local.
        background: RGB in [0, 1] of uncovered pixels.
        width: W [px].
        height: H [px].
    """
    device, dtype = frags.depth.device, frags.depth.dtype
    hw = height * width
    bg = torch.tensor(background, dtype=dtype, device=device)
    color = bg.expand(hw, 3).index_put((frags.pix,), colour)
    depth = torch.full((hw,), float("nan"), dtype=dtype, device=device).index_put(
        (frags.pix,), frags.depth
    )
    instance = torch.full((hw,), -1, dtype=torch.long, device=device)
    instance[frags.pix] = frags.mesh
    face_local = torch.full((hw,), -1, dtype=torch.long, device=device)
    offsets_t = torch.tensor(face_offsets, dtype=torch.long, device=device)
    face_local[frags.pix] = frags.face - offsets_t[frags.mesh]
    return RenderResult(
        color=color.reshape(height, width, 3),
        depth=depth.reshape(height, width),
        mask=mask.reshape(height, width),
        instance_ids=instance.reshape(height, width),
        face_ids=face_local.reshape(height, width),
    )


def _render_numba(
    meshes: list[Mesh],
    scene: _Scene,
    px: Tensor,
    z: Tensor,
    K: Tensor,
    width: int,
    height: int,
    lighting: Lighting,
    background: tuple[float, float, float],
    znear: float,
    shade: bool,
) -> RenderResult:
    """The hard mode with the compiled CPU kernels (same result as the torch path).

    The kernel shades Lambertian lighting itself; other lighting (highlights, extra lights) is
    applied by `_shade` to the kernel's unlit colour, with normals interpolated as in the kernel.

    Args:
        meshes: the M meshes (for their textures).
        scene: the concatenated meshes, on the CPU.
        px: (V, 2) projected vertices [px].
        z: (V,) vertex depth [m].
        K: (3, 3) intrinsics [px].
        width: W [px].
        height: H [px].
        lighting: the light.
        background: RGB in [0, 1] of uncovered pixels.
        znear: near plane [m].
        shade: apply lighting.

    Returns:
        A hard-mode `RenderResult`, floats in the dtype of `px` (computed in float64; the
        non-Lambertian lighting in the dtype of `px`).
    """
    from dvc_perception.render.raster_numba import rasterize_faces_numba, shade_numba

    z_np = z.detach().double().numpy()
    faces_np = scene.faces.numpy()
    fb, _, bb = rasterize_faces_numba(
        px.detach().double().numpy(), z_np, faces_np, width, height, znear
    )
    light = _light_direction(lighting, torch.float64, torch.device("cpu"))
    attrs_np = scene.attrs.detach().double().numpy()
    lambertian = lighting.is_lambertian
    color, depth, inst, face_local = shade_numba(
        fb, bb, faces_np, scene.face_mesh.numpy(),
        np.asarray(scene.face_offsets, dtype=np.int64), z_np, attrs_np,
        [None if m.texture is None else m.texture.detach().cpu().numpy() for m in meshes],
        lighting.ambient, lighting.diffuse, light.numpy(), shade and lambertian,
        np.asarray(background, dtype=np.float64),
    )  # fmt: skip
    dtype = px.dtype
    color_t = torch.from_numpy(color).to(dtype)
    if shade and not lambertian:
        # The kernel again, interpolating the normals in place of the albedo (no texture).
        attrs_n = attrs_np.copy()
        attrs_n[:, :3] = attrs_np[:, 3:6]
        normals, _, _, _ = shade_numba(
            fb, bb, faces_np, scene.face_mesh.numpy(),
            np.asarray(scene.face_offsets, dtype=np.int64), z_np, attrs_n,
            [None] * len(meshes), 0.0, 0.0, light.numpy(), False, np.zeros(3),
        )  # fmt: skip
        covered = fb >= 0
        pix = torch.from_numpy(np.flatnonzero(covered))
        K_cpu = K.detach().to("cpu", dtype)
        view = _view_directions(pix, K_cpu, width) if lighting.specular > 0 else None
        if covered.all():  # e.g. behind a back plane: no gather and scatter
            color_t = _shade(color_t, torch.from_numpy(normals).to(dtype), lighting, view)
        else:
            normals_t = torch.from_numpy(normals)[pix].to(dtype)
            color_t[pix] = _shade(color_t[pix], normals_t, lighting, view)
    return RenderResult(
        color=color_t.reshape(height, width, 3),
        depth=torch.from_numpy(depth).to(dtype).reshape(height, width),
        mask=torch.from_numpy(fb >= 0).reshape(height, width),
        instance_ids=torch.from_numpy(inst).reshape(height, width),
        face_ids=torch.from_numpy(face_local).reshape(height, width),
    )


def _use_numba(backend: str, soft: bool, device: torch.device) -> bool:
    """Whether the hard pass runs on the numba kernels, for `backend` as in `render`.

    Raises:
        ConfigError: unknown backend, or "numba" with `soft` or a non-CPU device.
        EngineUnavailableError: "numba" without numba installed.
    """
    if backend not in ("auto", "torch", "numba"):
        raise ConfigError(f"render backend must be auto, torch or numba, got {backend!r}")
    if backend == "numba":
        if soft or device.type != "cpu":
            raise ConfigError("render backend 'numba' is for hard (soft=False) CPU renders only")
        from dvc_perception.render.raster_numba import numba_available

        if not numba_available():
            raise EngineUnavailableError(
                "render backend 'numba' needs numba (requirements/dev.txt)"
            )
        return True
    if backend == "auto" and not soft and device.type == "cpu":
        from dvc_perception.render.raster_numba import numba_available

        return numba_available()
    return False


def _barycentric(tri_px: Tensor, p: Tensor) -> Tensor:
    """Screen-space barycentrics. tri_px (P, 3, 2) px, p (P, 2) px. Returns (P, 3)."""
    p0, p1, p2 = tri_px[:, 0], tri_px[:, 1], tri_px[:, 2]
    e1, e2, d = p1 - p0, p2 - p0, p - p0
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    b1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / area2
    b2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / area2
    return torch.stack([1.0 - b1 - b2, b1, b2], dim=-1)


def _apply_textures(
    meshes: list[Mesh], mesh_vis: Tensor, uv_vis: Tensor, colour_vis: Tensor
) -> Tensor:
    """Multiply the albedo of textured meshes' pixels by their bilinear texture sample.

    Args:
        meshes: the M meshes.
        mesh_vis: (P,) int64 mesh of each pixel.
        uv_vis: (P, 2) interpolated texture coordinates (OBJ convention, v up).
        colour_vis: (P, 3) albedo RGB in [0, 1].

    Returns:
        (P, 3) RGB in [0, 1], in the dtype of `colour_vis`.
    """
    dtype = colour_vis.dtype
    out = colour_vis
    for i, m in enumerate(meshes):
        if m.texture is None:
            continue
        sel = (mesh_vis == i).nonzero().squeeze(1)
        if sel.numel() == 0:
            continue
        tex = m.texture.to(dtype).permute(2, 0, 1).unsqueeze(0)  # (1, 3, Ht, Wt)
        uv = uv_vis[sel]
        # OBJ v points up, image rows point down; grid_sample wants [-1, 1] coordinates.
        grid = torch.stack([uv[:, 0] * 2.0 - 1.0, (1.0 - uv[:, 1]) * 2.0 - 1.0], dim=-1)
        sample = F.grid_sample(
            tex, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
            align_corners=False,
        )[0, :, 0].transpose(0, 1)  # fmt: skip
        out = out.index_put((sel,), out[sel] * sample)
    return out


def _face_candidates(
    px: Tensor,
    z: Tensor,
    faces: Tensor,
    width: int,
    height: int,
    znear: float,
    margin: float,
    wanted: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """(pixel x, pixel y, face) candidates: each face's bounding box expanded by `margin` px.

    Returns three (N,) int64 tensors. Faces behind `znear` or with zero screen area are culled;
    with `wanted` ((H, W) bool), so are faces whose box holds no wanted pixel (a summed-area
    table test), e.g. interior faces when only uncovered pixels matter.
    """
    fpx = px[faces]  # (F, 3, 2)
    ok = (z[faces] > znear).all(dim=1)
    lo = torch.ceil(fpx.min(dim=1).values - margin)
    hi = torch.floor(fpx.max(dim=1).values + margin)
    lo = torch.maximum(lo, lo.new_zeros(()))
    hi_cap = torch.tensor([width - 1, height - 1], dtype=hi.dtype, device=hi.device)
    hi = torch.minimum(hi, hi_cap)
    e1, e2 = fpx[:, 1] - fpx[:, 0], fpx[:, 2] - fpx[:, 0]
    area2 = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    ok &= (hi >= lo).all(dim=1) & (area2.abs() > 1e-12) & torch.isfinite(area2)
    if wanted is not None:
        sat = F.pad(wanted.to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))  # (H+1, W+1)
        x0, y0 = lo[:, 0].long().clamp(0, width), lo[:, 1].long().clamp(0, height)
        x1 = (hi[:, 0].long() + 1).clamp(0, width)
        y1 = (hi[:, 1].long() + 1).clamp(0, height)
        count = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
        ok &= count > 0
    fid = ok.nonzero().squeeze(1)
    lo_i, hi_i = lo[fid].long(), hi[fid].long()
    bw = hi_i[:, 0] - lo_i[:, 0] + 1
    n = bw * (hi_i[:, 1] - lo_i[:, 1] + 1)
    total = int(n.sum())
    cand_f = torch.repeat_interleave(
        torch.arange(fid.numel(), device=px.device), n, output_size=total
    )
    start = torch.cumsum(n, 0) - n
    off = torch.arange(total, device=px.device) - start[cand_f]
    bwc = bw[cand_f]
    xs = lo_i[cand_f, 0] + off % bwc
    ys = lo_i[cand_f, 1] + torch.div(off, bwc, rounding_mode="floor")
    return xs, ys, fid[cand_f]


def rasterize_faces(
    px: Tensor,
    z: Tensor,
    faces: Tensor,
    width: int,
    height: int,
    *,
    znear: float = 0.01,
    chunk: int = 4_000_000,
) -> Tensor:
    """Hard z-buffer: the nearest face at every pixel centre (no gradients).

    Args:
        px: (V, 2) projected vertices [px], pixel centres at integer coordinates.
        z: (V,) vertex depth [m], camera optical frame.
        faces: (F, 3) int64 vertex indices.
        width: W [px].
        height: H [px].
        znear: faces with a vertex nearer than this [m] are dropped.
        chunk: maximum (pixel, face) candidates processed at once (memory bound).

    Returns:
        (H * W,) int64 face index per pixel (row-major), -1 where nothing is hit.
    """
    hw = width * height
    xs, ys, fid = _face_candidates(px, z, faces, width, height, znear, margin=0.0)
    tri_px = px[faces]  # (F, 3, 2)
    inv_zf = 1.0 / z[faces].clamp_min(znear)  # (F, 3)
    zbuf = torch.full((hw,), float("inf"), dtype=px.dtype, device=px.device)
    keep_pix, keep_z, keep_f = [], [], []
    for s in range(0, xs.numel(), chunk):
        x, y, f = xs[s : s + chunk], ys[s : s + chunk], fid[s : s + chunk]
        b = _barycentric(tri_px[f], torch.stack([x.to(px.dtype), y.to(px.dtype)], dim=-1))
        inside = (b >= 0).all(dim=1)
        b, f = b[inside], f[inside]
        pix = y[inside] * width + x[inside]
        depth = 1.0 / (b * inv_zf[f]).sum(dim=1)
        zbuf.scatter_reduce_(0, pix, depth, reduce="amin")
        keep_pix.append(pix)
        keep_z.append(depth)
        keep_f.append(f)
    face_buf = torch.full((hw,), -1, dtype=torch.long, device=px.device)
    if keep_pix:
        pix, depth, f = torch.cat(keep_pix), torch.cat(keep_z), torch.cat(keep_f)
        win = depth <= zbuf[pix]
        face_buf.scatter_reduce_(0, pix[win], f[win], reduce="amax")
    return face_buf


def rasterize(
    px: Tensor,
    z: Tensor,
    faces: Tensor,
    width: int,
    height: int,
    *,
    znear: float = 0.01,
    backend: str = "auto",
) -> Tensor:
    """Hard visibility only: (H * W,) int64 nearest face per pixel, -1 for none.

    Arguments as in `rasterize_faces`; `backend` as in `render`.
    """
    if _use_numba(backend, False, px.device):
        from dvc_perception.render.raster_numba import rasterize_faces_numba

        fb, _, _ = rasterize_faces_numba(
            px.detach().double().numpy(), z.detach().double().numpy(), faces.numpy(), width,
            height, znear,
        )  # fmt: skip
        return torch.from_numpy(fb)
    with torch.no_grad():
        return rasterize_faces(px, z, faces, width, height, znear=znear)


def _soft_silhouette(
    px: Tensor,
    z: Tensor,
    faces: Tensor,
    covered: Tensor,
    width: int,
    height: int,
    znear: float,
    settings: SoftSettings,
) -> Tensor:
    """DIB-R soft coverage: 1 on covered pixels, ``1 - prod(1 - exp(-d^2/sigma^2))`` near them.

    Args:
        px: (V, 2) projected vertices [px] (with gradients).
        z: (V,) vertex depth [m].
        faces: (F, 3) vertex indices.
        covered: (H * W,) bool hard coverage.
        width: W [px].
        height: H [px].
        znear: near plane [m].
        settings: falloff width and support.

    Returns:
        (H * W,) float silhouette in [0, 1].
    """
    sigma = settings.sigma_px
    margin = settings.margin_sigmas * sigma
    with torch.no_grad():
        xs, ys, fid = _face_candidates(
            px.detach(), z.detach(), faces, width, height, znear, margin,
            wanted=~covered.reshape(height, width),
        )  # fmt: skip
        pix = ys * width + xs
        keep = ~covered[pix]
        xs, ys, fid, pix = xs[keep], ys[keep], fid[keep], pix[keep]
    p = torch.stack([xs, ys], dim=-1).to(px.dtype)
    tri = px[faces[fid]]  # (N, 3, 2)
    d2 = (
        torch.stack([_segment_dist2(p, tri[:, k], tri[:, (k + 1) % 3]) for k in range(3)], dim=-1)
        .min(dim=-1)
        .values
    )
    prob = torch.exp(-d2 / (sigma * sigma)).clamp(max=1.0 - 1e-7)
    log_empty = torch.zeros(width * height, dtype=px.dtype, device=px.device).index_add(
        0, pix, torch.log1p(-prob)
    )
    soft = 1.0 - torch.exp(log_empty)
    return torch.where(covered, torch.ones_like(soft), soft)


def _segment_dist2(p: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Squared distance from points p (N, 2) to segments a-b (N, 2) each. Returns (N,)."""
    ab = b - a
    s = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)
    q = a + s.clamp(0.0, 1.0).unsqueeze(-1) * ab
    return ((p - q) ** 2).sum(-1)

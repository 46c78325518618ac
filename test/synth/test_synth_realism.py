# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Realism settings of `SynthConfig`: lights, highlights, objects on the plane, shadows, sensor."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.render.mesh import mesh_from_arrays
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.render.raster import Lighting, render
from dvc_perception.synth.scenes import (
    SceneSampler,
    SynthConfig,
    _camera_effects,
    cast_shadows,
)

from .conftest import background_only_changes

SMALL = SynthConfig(width=160, height=120, fx=143.1, fy=143.4, cx=81.3, cy=60.5)
# no camera effects: pixel values are the render's, so lighting changes can be compared
CLEAN = dataclasses.replace(
    SMALL, color_jitter=0.0, blur_probability=0.0, noise_std=(0.0, 0.0), jpeg_probability=0.0
)
OFF_EXPLICITLY = dict(
    lights_per_frame=(1, 1), specular=(0.0, 0.0), shininess=(10.0, 60.0),
    objects_on_plane=False, shadow_probability=0.0, white_balance=0.0, gamma=(1.0, 1.0),
    motion_blur_probability=0.0, shot_noise=(0.0, 0.0), mesh_distractor_probability=0.0,
)  # fmt: skip
FIELDS = ("rgb", "depth", "instance_ids", "R", "t", "keypoints_2d", "keypoints_visible")


@pytest.fixture(scope="module")
def objects():
    # three objects with the same keypoints: the demo mesh under three ids
    demo = load_object(find_object_yaml("demo_object"))
    return [demo] + [dataclasses.replace(demo, object_id=f"demo_{c}") for c in "bc"]


def _digest(frame) -> str:
    """Instance image and poses (rounded: robust to last-bit float differences)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(frame.instance_ids, dtype="<i2").tobytes())
    for a, decimals in ((frame.R, 9), (frame.t, 9), (frame.keypoints_2d, 2)):
        h.update(np.round(np.asarray(a, np.float64), decimals).astype("<f8").tobytes())
    return h.hexdigest()[:20]


def test_defaults_draw_nothing_new_and_give_the_same_frames(objects) -> None:
    # Recorded before the realism settings existed: the next draw of each frame's generator
    # after its scene and after its image, and frame checksums. Equal values mean that no
    # setting at its default draws a random number or moves anything.
    golden = {
        SMALL: [(0.0838704112274743, 0.8594682758859661),
                (0.8105817232876661, 0.2741233348359139),
                (0.10167859184343553, 0.011956919048425663)],
        dataclasses.replace(SMALL, back_plane_from="surface", objects_per_frame=(1, 1)): [
            (0.9304138133919794, 0.33934004553129016),
            (0.02677203830960362, 0.4437213102556252),
            (0.6808212518698878, 0.7650112344456826)],
    }  # fmt: skip
    for cfg, draws in golden.items():
        sampler = SceneSampler(objects[:1], cfg, seed=0)
        for i, (after_scene, after_frame) in enumerate(draws):
            rng = np.random.default_rng((0, i))
            scene = sampler._sample_scene(rng)
            assert rng.random() == after_scene
            sampler._render_frame(i, scene, np.eye(4), rng)
            assert rng.random() == after_frame
    one = SceneSampler(objects[:1], SMALL, seed=0)
    assert _digest(one.sample(0)) == "3d0d8fb7dcad15e68a8a"
    assert _digest(one.sample(2)) == "b6be009f5fa83057c4a6"
    # the settings switched off explicitly give the defaults' frames bit for bit
    explicit = SceneSampler(objects[:1], dataclasses.replace(SMALL, **OFF_EXPLICITLY), seed=0)
    for i in range(2):
        a, b = one.sample(i), explicit.sample(i)
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), field)


def test_extra_lights_and_highlights_only_brighten(objects) -> None:
    cfg = dataclasses.replace(CLEAN, lights_per_frame=(3, 3), specular=(0.3, 0.3),
                              shininess=(20.0, 20.0))  # fmt: skip
    plain, lit = SceneSampler(objects, CLEAN, seed=2), SceneSampler(objects, cfg, seed=2)
    for i in range(2):
        a, b = plain.sample(i), lit.sample(i)
        for field in ("depth", "instance_ids", "R", "t"):  # the same scene...
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), field)
        assert (b.rgb >= a.rgb).all()  # ...with more light on it
        assert b.rgb.mean() > a.rgb.mean() + 5


def test_objects_rest_on_the_plane_along_their_rays(objects) -> None:
    base = dataclasses.replace(SMALL, distractors_per_frame=(0, 0), extra_planes=(0, 0),
                               objects_per_frame=(2, 3))  # fmt: skip
    cfg = dataclasses.replace(base, objects_on_plane=True)
    verts = objects[0].mesh.vertices.double().numpy()
    K = base.K
    for i in range(3):
        free, rest = SceneSampler(objects, base, seed=6).sample(i), SceneSampler(
            objects, cfg, seed=6).sample(i)  # fmt: skip
        # independent plane: fitted to the rendered background depth
        bg = (rest.instance_ids == -1) & np.isfinite(rest.depth)
        v, u = np.nonzero(bg)
        d = rest.depth[bg].astype(np.float64)
        X = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], axis=1)
        centre = X.mean(axis=0)
        n = np.linalg.svd(X - centre, full_matrices=False)[2][-1]
        n = -n if n[2] > 0 else n  # towards the camera
        assert np.abs((X - centre) @ n).max() < 1e-3
        assert rest.object_ids == free.object_ids
        np.testing.assert_array_equal(rest.R, free.R)  # rotations unchanged
        for k in range(len(rest.object_ids)):
            clearance = (verts @ rest.R[k].T + rest.t[k] - centre) @ n
            assert clearance.min() == pytest.approx(0.0, abs=1e-3)  # resting on the plane
            # along its own ray: the projected centre is unchanged
            uv_free, uv_rest = K @ free.t[k], K @ rest.t[k]
            np.testing.assert_allclose(uv_rest[:2] / uv_rest[2], uv_free[:2] / uv_free[2],
                                       atol=1e-6)  # fmt: skip
        # the plane sits among the instances: their depths stay near distance_m
        assert (rest.t[:, 2] > 0.5 * base.distance_m[0]).all()
        assert rest.t[:, 2].mean() < 2.0 * base.distance_m[1]


def _box(half: float):
    v = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * half
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])  # fmt: skip
    return mesh_from_arrays(v, f, vertex_colors=np.full((8, 3), 0.8), name="box")


def _slab_hit(origins: np.ndarray, direction: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """(N,) bool: the rays origins + s * direction (s > 0) meet the box [lo, hi]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (lo - origins) / direction, (hi - origins) / direction
    near = np.nanmax(np.minimum(t0, t1), axis=1)
    far = np.nanmin(np.maximum(t0, t1), axis=1)
    return (far >= np.maximum(near, 0.0)) & (far > 0)


@pytest.mark.parametrize(
    ("with_plane_as_caster", "backend"), [(False, "auto"), (True, "auto"), (False, "torch")]
)
def test_box_on_a_plane_casts_the_ray_traced_shadow(with_plane_as_caster: bool, backend: str):
    # A 10 cm box resting on a plane 1 m away, lit from the right at 45 degrees: the shadow
    # on the plane must be where a ray towards the light meets the box (independent slab test).
    plane_v = np.array([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [1.0, 1.0, 0.0], [-1.0, 1.0, 0.0]])
    plane = mesh_from_arrays(plane_v, np.array([[0, 1, 2], [0, 2, 3]]),
                             normals=np.tile([0.0, 0.0, -1.0], (4, 1)),
                             vertex_colors=np.full((4, 3), 0.6))  # fmt: skip
    box = _box(0.05)
    T = np.tile(np.eye(4), (2, 1, 1))
    T[0, :3, 3] = [0.0, 0.0, 1.0]
    T[1, :3, 3] = [0.02, 0.01, 0.95]
    K = np.array([[200.0, 0.0, 79.5], [0.0, 200.0, 59.5], [0.0, 0.0, 1.0]])
    light = Lighting(ambient=0.3, diffuse=0.6, direction_cam=(1.0, 0.0, -1.0))
    res = render([plane, box], torch.as_tensor(T, dtype=torch.float32), torch.as_tensor(K),
                 160, 120, lighting=light)  # fmt: skip
    color, depth = res.color.numpy(), res.depth.numpy()
    casters = [0, 1] if with_plane_as_caster else [1]
    out = cast_shadows(color, depth, [[plane, box][s] for s in casters], T[casters], K, light,
                       backend=backend)  # fmt: skip
    ratio = out.sum(-1) / color.sum(-1)
    on_plane = res.instance_ids.numpy() == 0
    v, u = np.nonzero(on_plane)
    d = depth[on_plane].astype(np.float64)
    X = np.stack([(u - 79.5) / 200.0 * d, (v - 59.5) / 200.0 * d, d], axis=1)
    want = np.zeros(on_plane.shape, dtype=bool)
    want[on_plane] = _slab_hit(X, np.array([1.0, 0.0, -1.0]), T[1, :3, 3] - 0.05,
                               T[1, :3, 3] + 0.05)  # fmt: skip
    got = ratio < 1.0 - 1e-6
    assert want.sum() > 200  # a real shadow: a 10 cm x 10 cm strip, 20 x 20 px
    assert (got[on_plane] == want[on_plane]).mean() > 0.97
    # away from the shadow's edge (3x3 neighbourhood agrees) they agree everywhere
    import cv2

    edge = cv2.dilate(want.astype(np.uint8), np.ones((3, 3))) != cv2.erode(
        want.astype(np.uint8), np.ones((3, 3)))  # fmt: skip
    assert (got == want)[on_plane & ~edge].all()
    # shadowed: ambient only; n = -z, n.l = cos 45
    inner = want & ~edge
    np.testing.assert_allclose(ratio[inner], 0.3 / (0.3 + 0.6 * np.sqrt(0.5)), rtol=1e-4)
    # the lit box face towards the camera is untouched
    on_box = res.instance_ids.numpy() == 1
    assert on_box.sum() > 100
    np.testing.assert_array_equal(out[on_box], color[on_box])


def test_shadows_only_darken_next_to_objects(objects) -> None:
    # The same scene with and without shadows (a tiny probability draws the same numbers).
    base = dataclasses.replace(CLEAN, objects_per_frame=(3, 3), distractors_per_frame=(0, 0),
                               extra_planes=(0, 0), objects_on_plane=True,
                               shadow_probability=1e-300)  # fmt: skip
    darker = 0
    for i in range(3):
        a = SceneSampler(objects, base, seed=1).sample(i)
        b = SceneSampler(objects, dataclasses.replace(base, shadow_probability=1.0),
                         seed=1).sample(i)  # fmt: skip
        np.testing.assert_array_equal(a.depth, b.depth)
        assert (b.rgb <= a.rgb).all()
        changed = (b.rgb < a.rgb).any(-1)
        darker += int((changed & (b.instance_ids == -1)).sum())  # on the plane
    assert darker > 50


def test_cast_shadows_rejects_bad_inputs() -> None:
    box = _box(0.05)
    with pytest.raises(ShapeError, match="T_cam"):
        cast_shadows(np.zeros((4, 5, 3)), np.zeros((4, 5)), [box], np.zeros((2, 4, 4)),
                     np.eye(3), Lighting())  # fmt: skip
    with pytest.raises(InputError, match="map_px_per_camera_px"):
        cast_shadows(np.zeros((4, 5, 3)), np.zeros((4, 5)), [box], np.eye(4)[None],
                     np.eye(3), Lighting(), map_px_per_camera_px=0.0)  # fmt: skip


def _effects(img: np.ndarray, **fields) -> np.ndarray:
    cfg = dataclasses.replace(CLEAN, **fields)
    return _camera_effects(img, np.random.default_rng(3), cfg).astype(np.float64)


def test_sensor_effects() -> None:
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.8, size=(60, 80, 3)).astype(np.float32)
    plain = _effects(img)
    # white balance: red and blue move in opposite directions, green is untouched
    wb = _effects(img, white_balance=0.3)
    np.testing.assert_array_equal(wb[..., 1], plain[..., 1])
    r_gain, b_gain = wb[..., 0].sum() / plain[..., 0].sum(), wb[..., 2].sum() / plain[..., 2].sum()
    assert abs(r_gain - 1.0) > 0.01
    assert r_gain - 1.0 == pytest.approx(1.0 - b_gain, abs=5e-3)
    # exposure curve: img ** 2
    np.testing.assert_allclose(_effects(img, gamma=(2.0, 2.0)), 255.0 * img.astype(np.float64)**2,
                               atol=0.51)  # fmt: skip
    # motion blur keeps the mean, smooths the image
    blurred = _effects(img, motion_blur_probability=1.0)
    assert blurred.mean() == pytest.approx(plain.mean(), abs=0.5)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 0.7 * np.abs(np.diff(plain, axis=1)).mean()
    # shot noise: std k * sqrt(signal)
    flat = np.concatenate([np.full((60, 40, 3), 0.1), np.full((60, 40, 3), 0.9)], axis=1)
    noisy = _effects(flat.astype(np.float32), shot_noise=(0.05, 0.05))
    dark, bright = noisy[:, :40].std(), noisy[:, 40:].std()
    assert dark == pytest.approx(255 * 0.05 * np.sqrt(0.1), rel=0.1)
    assert bright == pytest.approx(255 * 0.05 * np.sqrt(0.9), rel=0.1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lights_per_frame", (0, 2), "lights_per_frame"),
        ("lights_per_frame", (2, 1), "lights_per_frame"),
        ("lights_per_frame", (1.0, 2.0), "lights_per_frame"),
        ("specular", (0.5, 0.1), "specular"),
        ("specular", (-0.1, 0.1), "specular"),
        ("shininess", (0.5, 10.0), "shininess"),
        ("shininess", (10.0, float("inf")), "shininess"),
        ("objects_on_plane", "yes", "objects_on_plane"),
        ("shadow_probability", 1.5, "shadow_probability"),
        ("white_balance", 1.0, "white_balance"),
        ("gamma", (0.0, 1.0), "gamma"),
        ("gamma", (1.2, 0.8), "gamma"),
        ("motion_blur_probability", -0.1, "motion_blur_probability"),
        ("shot_noise", (0.02, 0.01), "shot_noise"),
        ("clutter_texture_probability", 1.5, "clutter_texture_probability"),
        ("object_cluster_spread", -0.1, "object_cluster_spread"),
        ("clutter_saturation", (0.6, 0.2), "clutter_saturation"),
        ("background_clutter_probability", 1.2, "background_clutter_probability"),
        ("clutter_saturation", (0.0, 1.5), "clutter_saturation"),
    ],
)
def test_realism_config_validation(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SynthConfig(**{field: value})


def test_realism_config_from_mapping() -> None:
    cfg = SynthConfig.from_mapping(
        {"lights_per_frame": [1, 3], "specular": [0.0, 0.3], "shininess": [5, 40],
         "objects_on_plane": True, "shadow_probability": 0.5, "white_balance": 0.1,
         "gamma": [0.8, 1.2], "motion_blur_probability": 0.2, "shot_noise": [0.0, 0.02],
         "clutter_saturation": [0.0, 0.6]}
    )  # fmt: skip
    assert cfg.lights_per_frame == (1, 3) and cfg.gamma == (0.8, 1.2) and cfg.objects_on_plane
    assert cfg.clutter_saturation == (0.0, 0.6)
    with pytest.raises(ConfigError, match="shininess"):
        Lighting(shininess=0.5)


def _edge_density(img: np.ndarray) -> float:
    """Fraction of pixels with a strong grey-level gradient (a clutter measure)."""
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
    return float((mag > 100).mean())


def test_clutter_textures_are_busier_and_reproducible() -> None:
    from dvc_perception.synth.procedural import clutter_texture, procedural_texture

    busy = [_edge_density(clutter_texture(np.random.default_rng(s))) for s in range(8)]
    smooth = [_edge_density(procedural_texture(np.random.default_rng(s), 256))
              for s in range(8)]
    assert np.median(busy) > 2 * np.median(smooth)
    np.testing.assert_array_equal(clutter_texture(np.random.default_rng(3)),
                                  clutter_texture(np.random.default_rng(3)))
    # every plane of a frame cluttered: the background has more edges than without
    on = _sampler_with(clutter_texture_probability=1.0)
    off = _sampler_with(clutter_texture_probability=0.0)
    assert np.mean([_edge_density(on.sample(i).rgb) for i in range(4)]) > np.mean(
        [_edge_density(off.sample(i).rgb) for i in range(4)])


def _chroma(img: np.ndarray) -> float:
    """Mean distance [0-255] of the pixels' RGB from their grey level (a saturation measure)."""
    rgb = img.astype(np.float64)
    return float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())


def test_clutter_saturation_moves_the_colours_towards_grey() -> None:
    from dvc_perception.synth.procedural import clutter_texture

    full = clutter_texture(np.random.default_rng(4), 128)
    np.testing.assert_array_equal(clutter_texture(np.random.default_rng(4), 128, saturation=1.0),
                                  full)  # 1: the texture as drawn (same draws)
    grey = clutter_texture(np.random.default_rng(4), 128, saturation=0.0)
    assert _chroma(grey) < 0.6  # rounding only
    np.testing.assert_allclose(grey.astype(float).mean(axis=2), full.astype(float).mean(axis=2),
                               atol=1.0)  # the grey levels (and so the edges) stay
    half = clutter_texture(np.random.default_rng(4), 128, saturation=0.5)
    assert _chroma(half) == pytest.approx(0.5 * _chroma(full), abs=0.5)
    # in frames: the cluttered planes' colours, with the range (0, 0.3), are less saturated
    muted = _sampler_with(clutter_texture_probability=1.0, clutter_saturation=(0.0, 0.3))
    vivid = _sampler_with(clutter_texture_probability=1.0)
    def background_chroma(sampler: SceneSampler) -> float:
        frames = [sampler.sample(i) for i in range(4)]
        return float(np.mean([_chroma(f.rgb[f.instance_ids == -1][:, None, :]) for f in frames]))
    assert background_chroma(muted) < 0.6 * background_chroma(vivid)


def test_background_clutter_is_refused_for_sequences() -> None:
    with pytest.raises(ConfigError, match="background_clutter_probability: expected 0 with seq"):
        SynthConfig(sequence=True, background_clutter_probability=0.5)


def test_background_clutter_replaces_the_background_only() -> None:
    on = _sampler_with(background_clutter_probability=1.0, clutter_saturation=(0.0, 0.6))
    off = _sampler_with(background_clutter_probability=0.0)
    # same scene, objects and distractors untouched (no camera effects in CLEAN)
    for a, b, background in background_only_changes(on, off):
        assert np.abs(a.rgb[background].astype(int) - b.rgb[background]).mean() > 10
    busy = np.mean([_edge_density(on.sample(i).rgb) for i in range(3)])
    assert busy > 2 * np.mean([_edge_density(off.sample(i).rgb) for i in range(3)])


def _sampler_with(**fields) -> SceneSampler:
    demo = load_object(find_object_yaml("demo_object"))
    return SceneSampler([demo], dataclasses.replace(CLEAN, **fields), seed=5)


def test_object_clusters_gather_the_objects(objects) -> None:
    def spread(sampler: SceneSampler) -> float:
        """Median over frames of the objects' projected-centre spread [px]."""
        out = []
        for i in range(12):
            f = sampler.sample(i)
            uv = f.t @ f.K.T
            uv = uv[:, :2] / uv[:, 2:]
            out.append(float(np.linalg.norm(uv - uv.mean(0), axis=1).mean()))
        return float(np.median(out))

    cfg = dataclasses.replace(CLEAN, objects_per_frame=(3, 3))
    apart = spread(SceneSampler(objects, cfg, seed=2))
    together = spread(SceneSampler(
        objects, dataclasses.replace(cfg, object_cluster_spread=0.05), seed=2))
    # uniform over 128x96 px: mean distance to the centroid ~ 35 px; spread 0.05 x 160 = 8 px
    assert together < 0.5 * apart
    m = cfg.image_margin
    for i in range(6):
        f = SceneSampler(objects, dataclasses.replace(cfg, object_cluster_spread=1.0),
                         seed=2).sample(i)
        uv = f.t @ f.K.T
        uv = uv[:, :2] / uv[:, 2:]
        assert np.all(uv[:, 0] >= m * cfg.width - 1e-6) and np.all(
            uv[:, 0] <= (1 - m) * cfg.width + 1e-6)

"""Chimera distractors (``SynthConfig.mesh_distractor_probability``): one object's stretched mesh
in another object's colours."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError
from dvc_perception.render.mesh import mesh_from_arrays
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.synth.procedural import chimera_mesh, transferred_colours, vertex_colours
from dvc_perception.synth.scenes import (
    DISTRACTOR_ID,
    MESH_DISTRACTOR_STRETCH,
    SceneSampler,
    SynthConfig,
)

SMALL = SynthConfig(width=160, height=120, fx=143.1, fy=143.4, cx=81.3, cy=60.5,
                    objects_per_frame=(2, 2), distractors_per_frame=(4, 4))
GREEN = (0.1, 0.8, 0.2)


@pytest.fixture(scope="module")
def two_objects():
    """The demo object, and the same mesh painted plain green under another id."""
    demo = load_object(find_object_yaml("demo_object"))
    green = torch.tensor(GREEN).expand(demo.mesh.num_vertices, 3).clone()
    painted = dataclasses.replace(demo.mesh, vertex_colors=green)
    return [demo, dataclasses.replace(demo, object_id="demo_green", mesh=painted)]


def _cloud(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(n, 3))


def test_transferred_colours_take_the_nearest_vertex_in_the_unit_boxes() -> None:
    rng = np.random.default_rng(0)
    faces = np.array([[0, 1, 2]])
    a_v, b_v = _cloud(rng, 300), _cloud(rng, 500)
    b_c = rng.uniform(size=(500, 3))
    # other boxes: a shifted and stretched, b scaled; the rule works in each one's unit box
    a = mesh_from_arrays(a_v * [0.02, 0.05, 0.1] + [1.0, 2.0, 3.0], faces,
                         allow_non_manifold=True)
    b = mesh_from_arrays(b_v * 0.3, faces, vertex_colors=b_c, allow_non_manifold=True)
    got = transferred_colours(a, b)
    # reference: brute force on the unit-box coordinates, in float64
    unit = [(v - v.min(0)) / (v.max(0) - v.min(0)) for v in (a_v, b_v)]
    d2 = ((unit[0][:, None, :] - unit[1][None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(got, b_c[np.argmin(d2, axis=1)], atol=1e-6)
    # onto itself: every vertex keeps its own colour
    np.testing.assert_allclose(transferred_colours(b, b), b_c, atol=1e-6)
    with pytest.raises(ConfigError, match="neither vertex colours nor a texture"):
        transferred_colours(b, a)


def test_vertex_colours_of_a_textured_mesh_are_its_texels() -> None:
    texture = np.array([[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]], np.float32)  # 2 x 2
    uv = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.9, 0.1]])  # v up: row 0 is v = 1
    mesh = mesh_from_arrays(np.eye(4, 3), np.array([[0, 1, 2], [1, 3, 2]]), uv=uv,
                            texture=texture, allow_non_manifold=True)
    np.testing.assert_array_equal(vertex_colours(mesh), texture.reshape(4, 3))


def test_chimera_mesh_stretches_along_the_mesh_axes(two_objects) -> None:
    shape = two_objects[0].mesh
    colours = np.full((shape.num_vertices, 3), 0.5, np.float32)
    m = chimera_mesh(shape, colours, np.array([0.6, 1.0, 1.6]), torch.device("cpu"))
    np.testing.assert_allclose(m.vertices.numpy(), shape.vertices.numpy() * [0.6, 1.0, 1.6],
                               rtol=1e-6, atol=1e-7)
    assert torch.equal(m.faces, shape.faces)
    np.testing.assert_allclose(m.vertex_colors.numpy(), colours)


def test_chimeras_are_other_objects_colours_on_stretched_shapes(two_objects) -> None:
    demo = two_objects[0].mesh
    sampler = SceneSampler(two_objects, dataclasses.replace(
        SMALL, mesh_distractor_probability=1.0), seed=3)
    colour_kinds = set()
    lo, hi = MESH_DISTRACTOR_STRETCH
    base = demo.vertices.double().numpy()
    big = np.abs(base) > 0.2 * np.abs(base).max(axis=0)  # coordinates that fix the stretch
    for i in range(4):
        scene = sampler._sample_scene(np.random.default_rng((3, i)))
        chimeras = [m for m, k in zip(scene.meshes, scene.kinds) if k == -1]
        assert len(chimeras) == 4  # every distractor
        for m in chimeras:
            v = m.vertices.double().numpy()
            for axis in range(3):
                ratio = v[big[:, axis], axis] / base[big[:, axis], axis]
                assert np.ptp(ratio) < 1e-5 and lo <= ratio[0] <= hi
            c = m.vertex_colors.numpy()
            # both objects are the demo mesh, so a chimera is the demo's shape in the colours
            # of the *other* object: plain green, or the demo's own colours (on the green one)
            if np.allclose(c, GREEN):
                colour_kinds.add("green")
            else:
                np.testing.assert_allclose(c, transferred_colours(demo, demo), atol=1e-6)
                colour_kinds.add("demo")
    assert colour_kinds == {"green", "demo"}
    # rendered, chimeras are distractors: not instances, their pixels DISTRACTOR_ID
    frame = sampler.sample(0)
    assert len(frame.R) == 2 and (frame.instance_ids == DISTRACTOR_ID).any()


def test_mesh_distractors_default_off_and_validated(two_objects) -> None:
    off = SceneSampler(two_objects, SMALL, seed=1)
    explicit = SceneSampler(two_objects, dataclasses.replace(
        SMALL, mesh_distractor_probability=0.0), seed=1)
    a, b = off.sample(1), explicit.sample(1)
    for field in ("rgb", "depth", "instance_ids", "R", "t"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), field)
    with pytest.raises(ConfigError, match="mesh_distractor_probability"):
        SynthConfig(mesh_distractor_probability=1.5)
    with pytest.raises(ConfigError, match="needs 2 objects"):
        SceneSampler(two_objects[:1], dataclasses.replace(SMALL, mesh_distractor_probability=0.5))
    cfg = SynthConfig.from_mapping({"mesh_distractor_probability": 0.5})
    assert cfg.mesh_distractor_probability == 0.5

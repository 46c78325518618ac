"""Background photographs behind the renders (`synth.backgrounds`, `SynthConfig`)."""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import pytest

from dvc_perception.errors import ConfigError, InputError
from dvc_perception.render.objects import find_object_yaml, load_object
from dvc_perception.synth.backgrounds import BackgroundPhotos, resolve_photos
from dvc_perception.synth.scenes import SceneSampler, SynthConfig

from .conftest import background_only_changes

CLEAN = SynthConfig(width=160, height=120, fx=143.1, fy=143.4, cx=81.3, cy=60.5,
                    color_jitter=0.0, blur_probability=0.0, noise_std=(0.0, 0.0),
                    jpeg_probability=0.0)


def _write(path: str, rgb: np.ndarray) -> str:
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def _gradient(h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 RGB: red ramps along x, green along y, blue constant."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                     np.full_like(x, 90)], axis=-1).astype(np.uint8)


def test_photos_are_resolved_from_files_directories_and_globs(tmp_path) -> None:
    d = tmp_path / "photos"
    d.mkdir()
    a = _write(str(d / "a.png"), _gradient(12, 16))
    b = _write(str(d / "b.color.jpg"), _gradient(12, 16))
    (d / "notes.txt").write_text("not an image")
    _write(str(tmp_path / "c.png"), _gradient(12, 16))
    assert resolve_photos([str(d)]) == sorted([os.path.abspath(a), os.path.abspath(b)])
    assert resolve_photos([str(d / "*.color.jpg")]) == [os.path.abspath(b)]
    both = resolve_photos([a, str(d), str(tmp_path / "c.png")])  # duplicates once
    assert len(both) == 3
    for bad in ([str(tmp_path / "missing")], [str(d / "*.tif")], [str(d / "notes.txt")], []):
        with pytest.raises(ConfigError, match="background_photos"):
            resolve_photos(bad)


def test_a_zoom_of_one_shows_the_whole_photo(tmp_path) -> None:
    photo = _gradient(60, 80)  # the frame's aspect: the whole photo is the crop
    photos = BackgroundPhotos([_write(str(tmp_path / "p.png"), photo)], scale=(1.0, 1.0))
    expected = cv2.resize(photo, (40, 30), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    flips = 0
    for seed in range(8):
        out = photos.draw(np.random.default_rng(seed), 30, 40)
        assert out.shape == (30, 40, 3) and out.dtype == np.float32
        if np.allclose(out, expected, atol=1e-6):
            continue
        # otherwise mirrored: red falls along x instead of rising
        np.testing.assert_allclose(out, expected[:, ::-1], atol=1e-6)
        flips += 1
    assert 0 < flips < 8


def test_zoomed_crops_are_parts_of_the_photo_and_reproducible(tmp_path) -> None:
    photo = _gradient(240, 320)
    photos = BackgroundPhotos([_write(str(tmp_path / "p.png"), photo)], scale=(2.0, 2.0))
    a = photos.draw(np.random.default_rng(3), 60, 80)
    np.testing.assert_array_equal(a, photos.draw(np.random.default_rng(3), 60, 80))
    # zoom 2: the crop spans half the photo's width, so about half of the red ramp's range
    red = a[..., 0] * 255
    span = red.max() - red.min()
    assert 0.4 * 255 < span < 0.6 * 255
    np.testing.assert_allclose(a[..., 2] * 255, 90, atol=0.5)  # blue as in the photo


def test_an_undecodable_photo_is_a_typed_error(tmp_path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    photos = BackgroundPhotos([str(bad)])
    with pytest.raises(InputError, match="broken.png"):
        photos.draw(np.random.default_rng(0), 30, 40)


def _samplers(tmp_path, **fields) -> tuple[SceneSampler, SceneSampler]:
    demo = load_object(find_object_yaml("demo_object"))
    on = dataclasses.replace(CLEAN, **fields)
    return SceneSampler([demo], on, seed=5), SceneSampler([demo], CLEAN, seed=5)


def test_the_photo_replaces_the_background_only(tmp_path) -> None:
    colour = np.array([20, 200, 40], np.uint8)  # a flat photo: every background pixel this
    path = _write(str(tmp_path / "flat.png"), np.broadcast_to(colour, (90, 120, 3)).copy())
    on, off = _samplers(tmp_path, background_photos=(path,), background_photo_probability=1.0)
    for a, _, background in background_only_changes(on, off):
        assert np.abs(a.rgb[background].astype(int) - colour.astype(int)).max() <= 1


def test_a_photo_frame_gets_no_clutter_and_probability_zero_changes_nothing(tmp_path) -> None:
    path = _write(str(tmp_path / "flat.png"), np.full((90, 120, 3), 128, np.uint8))
    both, _ = _samplers(tmp_path, background_photos=(path,), background_photo_probability=1.0,
                        background_clutter_probability=1.0)
    f = both.sample(0)
    np.testing.assert_allclose(f.rgb[f.instance_ids == -1].astype(int), 128, atol=1)
    # listing photos with probability 0 draws nothing: the frames are those without them
    unused, off = _samplers(tmp_path, background_photos=(path,))
    np.testing.assert_array_equal(unused.sample(1).rgb, off.sample(1).rgb)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(background_photo_probability=0.5), "needs synth.background_photos"),
        (dict(background_photo_probability=1.5, background_photos=("x",)),
         "background_photo_probability: expected a probability"),
        (dict(background_photos="photos/"), "background_photos: expected a list"),
        (dict(background_photo_zoom=(0.5, 2.0)), "background_photo_zoom"),
        (dict(background_photo_zoom=(2.0, 1.5)), "background_photo_zoom"),
        (dict(sequence=True, background_photo_probability=0.5, background_photos=("x",)),
         "background_photo_probability: expected 0 with sequence"),
    ],
)
def test_photo_settings_are_validated(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(CLEAN, **fields)


def test_photo_paths_are_checked_when_the_sampler_is_made(tmp_path) -> None:
    cfg = SynthConfig.from_mapping({"background_photos": [str(tmp_path / "none" / "*.jpg")],
                                    "background_photo_probability": 0.5})
    assert cfg.background_photos == (str(tmp_path / "none" / "*.jpg"),)
    with pytest.raises(ConfigError, match="names no image file"):
        SceneSampler([load_object(find_object_yaml("demo_object"))], cfg, seed=0)

"""Photographs behind rendered objects: the user's own workspace as the synthetic background.

A robot team that trains from a CAD mesh can usually also take a few dozen photos of where the
robot works (the bench, the shelves, the floor), without the objects in them. Pasting those
behind the renders gives the detector and pose networks real background statistics (real
clutter, real greys and whites, real camera noise) that procedural textures miss. The objects
and their ground truth stay fully synthetic.

`BackgroundPhotos` resolves a list of files, directories and glob patterns to image files once,
decodes each lazily (cached, shrunk so its longer side is at most `max_side` px) and draws
random crops: a random photo, a crop of a random size (``scale`` of the photo's shorter side
relative to the frame's), a random position, a horizontal flip with probability 1/2, resized to
the frame. Draws come from the caller's generator only: frames are reproducible.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

import cv2
import numpy as np

from dvc_perception.errors import ConfigError, InputError

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def resolve_photos(entries: Sequence[str]) -> list[str]:
    """Image files named by `entries`, sorted, without duplicates.

    Each entry is an image file, a directory (its image files, not recursive) or a glob
    pattern (e.g. ``photos/*.color.jpg``); images are the files ending in `PHOTO_SUFFIXES`.

    Raises:
        ConfigError: an entry that matches no image file, or no entries at all.
    """
    if isinstance(entries, str) or not entries:
        raise ConfigError(f"synth.background_photos: expected a list of image files, "
                          f"directories or glob patterns, got {entries!r}")
    files: set[str] = set()
    for entry in entries:
        entry = os.path.expanduser(str(entry))
        if os.path.isdir(entry):
            found = [os.path.join(entry, n) for n in os.listdir(entry)]
        elif os.path.isfile(entry):
            found = [entry]
        else:
            found = glob.glob(entry)
        images = [f for f in found if f.lower().endswith(PHOTO_SUFFIXES) and os.path.isfile(f)]
        if not images:
            raise ConfigError(f"synth.background_photos: {entry!r} names no image file "
                              f"(expected a file, a directory or a glob pattern of "
                              f"{', '.join(PHOTO_SUFFIXES)} files)")
        files.update(os.path.abspath(f) for f in images)
    return sorted(files)


class BackgroundPhotos:
    """Random crops of background photographs.

    Args:
        entries: files, directories and glob patterns (`resolve_photos`).
        scale: (low, high) crop zoom: a crop spans 1/zoom of the largest frame-shaped region
            of the photo, so 1 shows the whole photo (cropped to the frame's aspect) and 2 a
            quarter of it.
        max_side: decoded photos are shrunk so their longer side is at most this [px].
    """

    def __init__(self, entries: Sequence[str], scale: tuple[float, float] = (1.0, 2.5),
                 max_side: int = 1280) -> None:
        lo, hi = scale
        if not 1.0 <= lo <= hi:
            raise ConfigError(f"background photo zoom: expected 1 <= low <= high, got {scale}")
        self.files = resolve_photos(entries)
        self.scale = (float(lo), float(hi))
        self.max_side = int(max_side)
        self._cache: dict[str, np.ndarray] = {}

    def photo(self, index: int) -> np.ndarray:
        """Photo `index` as (H, W, 3) uint8 RGB, decoded once.

        Raises:
            InputError: the file cannot be decoded as an image.
        """
        path = self.files[index]
        img = self._cache.get(path)
        if img is None:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                raise InputError(f"background photo {path!r}: not a readable image")
            side = max(bgr.shape[:2])
            if side > self.max_side:
                f = self.max_side / side
                bgr = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
            img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            self._cache[path] = img
        return img

    def draw(self, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
        """One background, (height, width, 3) float32 RGB in [0, 1]."""
        img = self.photo(int(rng.integers(len(self.files))))
        ph, pw = img.shape[:2]
        zoom = float(rng.uniform(*self.scale))
        # the largest region of the frame's aspect inside the photo, shrunk by the zoom
        fit = min(ph / height, pw / width)
        ch = max(1, min(ph, int(round(height * fit / zoom))))
        cw = max(1, min(pw, int(round(width * fit / zoom))))
        y0 = int(rng.integers(ph - ch + 1))
        x0 = int(rng.integers(pw - cw + 1))
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        shrink = ch > height  # area averaging when shrinking, bilinear when enlarging
        out = cv2.resize(np.ascontiguousarray(crop), (width, height),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return out.astype(np.float32) / np.float32(255.0)

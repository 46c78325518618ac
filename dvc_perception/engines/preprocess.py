# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""The one map from a camera frame to a network input, with exact intrinsics.

Serving (`pipeline.network`), training (`train.datasets`) and INT8 calibration
(`engines.calibrate`) all build network inputs here, so they cannot drift apart:

1. an affine from source pixels to input pixels: the letterbox (`letterbox_affine`: scale
   ``s = min(dst_w / src_w, dst_h / src_h)``, image at the top-left, zero padding), to which
   training composes its augmentation zoom/shift or crop offset;
2. `warp_to_input`: the uint8 RGB frame as float32 in [0, 1], then a bilinear warp by that
   affine (constant padding), float before the warp so no 8-bit rounding is added;
3. `normalise_nchw`: ``(x - mean) / std`` of the model metadata, HWC -> (1, 3, H, W).

Under the pixel-centre convention a source pixel u maps to ``s * (u + 0.5) - 0.5``, so the
intrinsics follow exactly as ``K' = A K`` and keypoints go back by the inverse map. Depth goes
back to the source resolution by nearest-neighbour sampling, which never invents a surface
between two depths (bilinear interpolation across a depth edge makes phantom obstacles for
planners); input pixels outside the scaled image (the padding) are NaN.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from dvc_perception.errors import ConfigError, InputError, ShapeError, check_shape
from dvc_perception.geometry.camera import CameraModel

#: Resize modes of a model's input (metadata ``resize``): "letterbox" (the map above) or
#: "stretch" (resize to the input, ``cv2.INTER_AREA`` when shrinking; older models).
RESIZE_MODES = ("stretch", "letterbox")


def letterbox_affine(src_width: int, src_height: int, dst_width: int, dst_height: int
                     ) -> np.ndarray:
    """(2, 3) float64 affine, input px = A @ [u, v, 1] of source px (pixel-centre convention).

    Scale ``s = min(dst_w / src_w, dst_h / src_h)``, image at the top-left:
    ``u_dst = s * (u_src + 0.5) - 0.5`` (same for v).
    """
    s = min(dst_width / src_width, dst_height / src_height)
    return np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]])


#: Largest image width and height the pipeline takes [px]: OpenCV's remap, behind warpAffine,
#: asserts ``cols < SHRT_MAX and rows < SHRT_MAX`` (32767 itself fails, checked on 4.12).
MAX_IMAGE_SIDE_PX = 32766


def check_image_size(width: int, height: int, name: str = "image") -> None:
    """Refuse an image wider or taller than `MAX_IMAGE_SIDE_PX`, before OpenCV sees it.

    Raises:
        InputError: naming the size and the limit.
    """
    if width > MAX_IMAGE_SIDE_PX or height > MAX_IMAGE_SIDE_PX:
        raise InputError(
            f"{name} is {width}x{height} px: expected at most {MAX_IMAGE_SIDE_PX} px per side "
            "(OpenCV's warpAffine/remap limit: sides < 32767)"
        )


def check_rgb_image(image_rgb: np.ndarray, name: str = "image_rgb") -> tuple[int, int]:
    """(width, height) of a (H, W, 3) uint8 RGB image the pipeline can warp.

    Every frame passes here (`pipeline.check_frame`, the network front ends).

    Raises:
        ShapeError: not a uint8 numpy array shaped (H, W, 3).
        InputError: a side over `MAX_IMAGE_SIDE_PX`.
    """
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8:
        raise ShapeError(
            f"{name}: expected a uint8 numpy array, got {type(image_rgb).__name__} "
            f"{getattr(image_rgb, 'dtype', '')}"
        )
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ShapeError(f"{name}: expected shape (H, W, 3), got {image_rgb.shape}")
    width, height = int(image_rgb.shape[1]), int(image_rgb.shape[0])
    check_image_size(width, height, name)
    return width, height


def warp_to_input(image_rgb: np.ndarray, affine: np.ndarray, width: int, height: int,
                  fill: float = 0.0) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (height, width, 3) float32 in [0, 1], warped by `affine` (2, 3).

    Float before the warp (bilinear, constant `fill` outside the image).
    """
    image = image_rgb.astype(np.float32) / np.float32(255.0)
    return cv2.warpAffine(
        image, affine, (width, height), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=fill,
    )  # fmt: skip


def normalise_nchw(image: np.ndarray, mean: Sequence[float], std: Sequence[float]
                   ) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 1] -> (1, 3, H, W) float32 ``(x - mean) / std``."""
    x = (image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


class _ScaledInput(ABC):
    """A uniform scale + shift from a source image into a network input (Letterbox, ZoomCrop).

    Subclasses set `src_width`, `src_height`, `dst_width`, `dst_height` and define `scale` (s)
    and `offset` (o, px): input px ``= s * source px + o``, so ``K' = A K`` is exact.
    """

    src_width: int
    src_height: int
    dst_width: int
    dst_height: int

    @property
    @abstractmethod
    def scale(self) -> float:
        """Source-to-input scale factor s."""

    @property
    @abstractmethod
    def offset(self) -> tuple[float, float]:
        """(o_u, o_v) px: input px = s * source px + o."""

    def _check_sizes(self, what: str) -> None:
        for name in ("src_width", "src_height", "dst_width", "dst_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{what} {name}: expected a positive integer, got {value!r}")

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) float64 affine: input px = A @ [u, v, 1] of source px."""
        s, (ou, ov) = self.scale, self.offset
        return np.array([[s, 0.0, ou], [0.0, s, ov]])

    def network_input(self, image_rgb: np.ndarray, mean: Sequence[float] = (0.0, 0.0, 0.0),
                      std: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
        """Source image (src_h, src_w, 3) uint8 RGB -> (1, 3, dst_h, dst_w) float32 input.

        `warp_to_input` by the affine (zero outside the source image), then `normalise_nchw`.
        """
        if image_rgb.shape[:2] != (self.src_height, self.src_width):
            raise ShapeError(
                f"{type(self).__name__} image: expected ({self.src_height}, {self.src_width}, 3), "
                f"got {image_rgb.shape}"
            )
        image = warp_to_input(image_rgb, self.affine, self.dst_width, self.dst_height)
        return normalise_nchw(image, mean, std)

    def camera_to_input(self, camera: CameraModel) -> CameraModel:
        """The camera of the network input: ``K' = A K``; distortion (normalised) unchanged."""
        if (camera.width, camera.height) != (self.src_width, self.src_height):
            raise ShapeError(
                f"{type(self).__name__} camera: expected {self.src_width}x{self.src_height}, got "
                f"{camera.width}x{camera.height}"
            )
        A = np.vstack([self.affine, [0.0, 0.0, 1.0]])
        K = A @ camera.K.detach().cpu().numpy()
        return CameraModel(
            K, camera.D.clone(), self.dst_width, self.dst_height, camera.distortion_model
        )

    def points_to_source(self, uv_input: np.ndarray) -> np.ndarray:
        """Input px (..., 2) -> source px (..., 2): ``u = (u' - o) / s``."""
        uv = np.asarray(uv_input, dtype=np.float64)
        if uv.ndim < 1 or uv.shape[-1] != 2:
            raise ShapeError(f"input points: expected shape (..., 2), got {uv.shape}")
        return (uv - np.asarray(self.offset)) / self.scale


@dataclass(frozen=True)
class Letterbox(_ScaledInput):
    """The whole `src_width` x `src_height` image into a `dst_width` x `dst_height` input.

    Scale ``s = min(dst_w / src_w, dst_h / src_h)``, image at the top-left, zero padding.
    """

    src_width: int
    src_height: int
    dst_width: int
    dst_height: int

    def __post_init__(self) -> None:
        self._check_sizes("letterbox")

    @property
    def scale(self) -> float:
        """Source-to-input scale factor s."""
        return min(self.dst_width / self.src_width, self.dst_height / self.src_height)

    @property
    def offset(self) -> tuple[float, float]:
        """(0.5 s - 0.5, 0.5 s - 0.5): pixel centres stay pixel centres."""
        o = 0.5 * self.scale - 0.5
        return (o, o)

    @property
    def affine(self) -> np.ndarray:
        """(2, 3) float64 affine: input px = A @ [u, v, 1] of source px."""
        return letterbox_affine(self.src_width, self.src_height, self.dst_width, self.dst_height)

    def points_to_source(self, uv_input: np.ndarray) -> np.ndarray:
        """Input px (..., 2) -> source px (..., 2): ``u = (u' + 0.5) / s - 0.5``."""
        uv = np.asarray(uv_input, dtype=np.float64)
        if uv.ndim < 1 or uv.shape[-1] != 2:
            raise ShapeError(f"letterbox points: expected shape (..., 2), got {uv.shape}")
        return (uv + 0.5) / self.scale - 0.5

    @property
    def content_size(self) -> tuple[int, int]:
        """(width, height) px of the input covered by the scaled image (the rest is padding)."""
        s = self.scale
        return (
            min(self.dst_width, int(np.ceil(s * self.src_width - 1e-9))),
            min(self.dst_height, int(np.ceil(s * self.src_height - 1e-9))),
        )

    def depth_to_source(self, depth_input: np.ndarray) -> np.ndarray:
        """Input-resolution depth (dst_h, dst_w) m -> source resolution (src_h, src_w) float32.

        Nearest-neighbour: every output value is one of the input's values (no surface between
        two depths is invented); the padding of the input is NaN.
        """
        check_shape(depth_input, f"{self.dst_height},{self.dst_width}", name="depth_input")
        depth = np.array(depth_input, dtype=np.float32)
        cw, ch = self.content_size
        depth[ch:, :] = np.nan
        depth[:, cw:] = np.nan
        s = self.scale
        u = np.rint(s * (np.arange(self.src_width) + 0.5) - 0.5).astype(np.int64)
        v = np.rint(s * (np.arange(self.src_height) + 0.5) - 0.5).astype(np.int64)
        u = np.clip(u, 0, self.dst_width - 1)
        v = np.clip(v, 0, self.dst_height - 1)
        return depth[v[:, None], u[None, :]]


@dataclass(frozen=True)
class ZoomCrop(_ScaledInput):
    """An object-centred crop of the full-resolution frame into a fixed network input.

    The source square of side `side_px` centred on (`centre_u`, `centre_v`) (source px, pixel
    centres) maps onto the input's centre, scaled by ``s = min(dst_w, dst_h) / side_px``: input
    px ``= s * (source px - centre) + ((dst - 1) / 2)``. Parts of the square outside the image
    are zero, and ``K' = A K`` is exact as for the letterbox.
    """

    src_width: int
    src_height: int
    dst_width: int
    dst_height: int
    centre_u: float
    centre_v: float
    side_px: float

    def __post_init__(self) -> None:
        self._check_sizes("zoom crop")
        values = (self.centre_u, self.centre_v, self.side_px)
        if not (np.all(np.isfinite(values)) and self.side_px > 0):
            raise ConfigError(f"zoom crop: expected a finite centre and side > 0 px, got "
                              f"centre ({self.centre_u}, {self.centre_v}), side {self.side_px}")

    @classmethod
    def from_box(cls, box_xywh: Sequence[float], src_size: tuple[int, int],
                 dst_size: tuple[int, int], *, scale: float = 1.5) -> ZoomCrop:
        """The crop around a box ``(x, y, w, h)`` (BOP/COCO: x, y the top-left pixel).

        Centre: the box's centre, ``x + w / 2 - 0.5`` under the pixel-centre convention; side:
        `scale` x the box's longer side (context around the object, as CDPN / GDR-Net zoom in).
        """
        x, y, w, h = (float(v) for v in box_xywh)
        return cls(int(src_size[0]), int(src_size[1]), int(dst_size[0]), int(dst_size[1]),
                   x + 0.5 * w - 0.5, y + 0.5 * h - 0.5, scale * max(w, h, 1.0))

    @property
    def scale(self) -> float:
        """Source-to-input scale factor s."""
        return min(self.dst_width, self.dst_height) / self.side_px

    @property
    def offset(self) -> tuple[float, float]:
        """(o_u, o_v) px: the crop centre lands on the input's centre."""
        s = self.scale
        return (0.5 * (self.dst_width - 1) - s * self.centre_u,
                0.5 * (self.dst_height - 1) - s * self.centre_v)


def box_from_mask(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """Tight ``(x, y, w, h)`` box (BOP/COCO, px) of a (H, W) bool mask, or None when empty.

    ``x`` / ``y`` are the first set column / row, ``w`` / ``h`` the extents in px: a single set
    pixel (u, v) gives ``(u, v, 1, 1)``.

    Raises:
        ShapeError: `mask` is not 2-D.
    """
    mask = np.asarray(mask)
    check_shape(mask, "H,W", name="mask")
    mask = mask.astype(bool)
    cols = np.flatnonzero(mask.any(axis=0))
    rows = np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    x0, x1 = int(cols[0]), int(cols[-1])
    y0, y1 = int(rows[0]), int(rows[-1])
    return (float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1))


def preprocess_frame(
    rgb: np.ndarray,
    input_size: tuple[int, int],
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    resize: str = "stretch",
) -> np.ndarray:
    """One RGB frame -> network input (1, 3, height, width) float32, as the model describes it.

    Args:
        rgb: (H, W, 3) uint8 RGB image.
        input_size: (width, height) px of the network input.
        mean: per-channel mean of RGB in [0, 1].
        std: per-channel std of RGB in [0, 1].
        resize: "letterbox" (`Letterbox.network_input`) or "stretch" (resize to the input).

    Raises:
        InputError: not an (H, W, 3) uint8 image.
        ConfigError: unknown `resize`.
    """
    try:
        check_rgb_image(rgb, "frame")
    except ShapeError as err:
        raise InputError(f"expected an (H, W, 3) uint8 RGB frame: {err}") from err
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    width, height = int(input_size[0]), int(input_size[1])
    if resize == "letterbox":
        return Letterbox(rgb.shape[1], rgb.shape[0], width, height).network_input(rgb, mean, std)
    x = rgb.astype(np.float32) / np.float32(255.0)
    if rgb.shape[:2] != (height, width):
        shrink = rgb.shape[0] > height or rgb.shape[1] > width
        x = cv2.resize(
            x, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
    return normalise_nchw(x, mean, std)

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Pinhole camera with OpenCV / ROS lens distortion (plumb_bob, rational_polynomial).

The distortion maps normalised pinhole coordinates ``(x, y) = (X/Z, Y/Z)`` to distorted ones
exactly as OpenCV's ``projectPoints`` and ROS ``image_geometry`` do::

    r2 = x^2 + y^2
    radial = (1 + k1 r2 + k2 r2^2 + k3 r2^3) / (1 + k4 r2 + k5 r2^2 + k6 r2^3)
    x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2)
    y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y

and pixels are ``K @ [x_d, y_d, 1]``. Pixel (0, 0) is the centre of the top-left pixel, u right,
v down (the OpenCV / ROS CameraInfo convention).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dvc_perception.errors import ConfigError, check_shape

#: Number of distortion coefficients of each supported model (ROS CameraInfo names).
DISTORTION_SIZES: dict[str, int] = {"none": 0, "plumb_bob": 5, "rational_polynomial": 8}

#: Newton steps of `CameraModel.undistort_points`. Starting from the distorted point, 5 steps
#: bring ``project(undistort(uv))`` within 3e-13 px of ``uv`` over the whole 640x480 image of the
#: chessboard calibration (k1 = -0.26, k6 = -0.40; 4 steps: 3e-9 px, 3 steps: 8e-4 px); 8 leave a
#: margin for stronger lenses (test_undistort_round_trip_whole_image checks < 1e-6 px).
UNDISTORT_NEWTON_STEPS = 8


def _as_float64(value: Any, name: str) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", torch.float64).clone()
    try:
        return torch.as_tensor(np.asarray(value, dtype=np.float64)).clone()
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: expected numbers, got {value!r}") from err


def _coefficients(D: Tensor) -> tuple[Tensor, ...]:
    """(k1, k2, p1, p2, k3, k4, k5, k6), zeros for what the model lacks (0-d tensors)."""
    full = torch.zeros(8, dtype=D.dtype, device=D.device)
    full[: D.numel()] = D
    return tuple(full.unbind())


@dataclass(frozen=True, eq=False)
class CameraModel:
    """Intrinsics and lens distortion of one camera.

    Attributes:
        K: (3, 3) float64 camera matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]], px.
        D: (n,) float64 distortion coefficients: n = 0 ("none"), 5 ("plumb_bob": k1 k2 p1 p2
            k3) or 8 ("rational_polynomial": k1 k2 p1 p2 k3 k4 k5 k6), OpenCV / ROS order.
        width: image width, px.
        height: image height, px.
        distortion_model: "none", "plumb_bob" or "rational_polynomial".

    `K` and `D` may be given as any array-like; they are stored as float64 CPU tensors.

    Raises:
        ConfigError: unknown distortion model, wrong number of coefficients, non-finite values,
            K not of the form above (fx, fy > 0), or a non-positive image size.
    """

    K: Tensor
    D: Tensor
    width: int
    height: int
    distortion_model: str = "none"

    def __post_init__(self) -> None:
        K = _as_float64(self.K, "K")
        D = _as_float64(self.D, "D").reshape(-1)
        if self.distortion_model not in DISTORTION_SIZES:
            raise ConfigError(
                f"distortion_model: expected one of {sorted(DISTORTION_SIZES)}, "
                f"got {self.distortion_model!r}"
            )
        if K.shape != (3, 3):
            raise ConfigError(f"K: expected shape (3, 3), got {tuple(K.shape)}")
        if not bool(torch.isfinite(K).all()):
            raise ConfigError(f"K: expected finite values, got {K.tolist()}")
        if not (K[0, 0] > 0 and K[1, 1] > 0):
            raise ConfigError(f"K: expected fx, fy > 0, got {K[0, 0].item()}, {K[1, 1].item()}")
        if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise ConfigError(f"K: expected last rows [0, fy, cy], [0, 0, 1], got {K.tolist()}")
        want = DISTORTION_SIZES[self.distortion_model]
        if D.numel() != want:
            raise ConfigError(
                f"D: distortion_model {self.distortion_model!r} takes {want} coefficients, "
                f"got {D.numel()}"
            )
        if not bool(torch.isfinite(D).all()):
            raise ConfigError(f"D: expected finite values, got {D.tolist()}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "D", D)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_camera_info(
        cls,
        k: Sequence[float],
        d: Sequence[float],
        width: int,
        height: int,
        distortion_model: str = "plumb_bob",
    ) -> CameraModel:
        """Build from the fields of a sensor_msgs/CameraInfo (no ROS import needed).

        Args:
            k: the 9 numbers of ``CameraInfo.k`` (row-major K), px.
            d: ``CameraInfo.d``. An empty `d` means no distortion whatever the model says
                (drivers and simulators publish ``plumb_bob`` with ``d = []``).
            width: image width, px.
            height: image height, px.
            distortion_model: "plumb_bob", "rational_polynomial" or "none" ("" means "none").

        Raises:
            ConfigError: as the constructor, or when `k` does not hold 9 numbers.
        """
        k_arr = np.asarray(k, dtype=np.float64).reshape(-1)
        if k_arr.size != 9:
            raise ConfigError(f"k: expected 9 numbers (row-major 3x3), got {k_arr.size}")
        model = distortion_model or "none"
        d_arr = np.asarray(d, dtype=np.float64).reshape(-1)
        if d_arr.size == 0 and model in DISTORTION_SIZES:
            d_arr = np.zeros(DISTORTION_SIZES[model])
        return cls(k_arr.reshape(3, 3), d_arr, width, height, model)

    @classmethod
    def from_opencv_yaml(
        cls,
        path: str | Path,
        which: str = "M1",
        *,
        dist_key: str | None = None,
        width: int | None = None,
        height: int | None = None,
    ) -> CameraModel:
        """Read an OpenCV FileStorage calibration (``stereoCalibrate`` / ``calibrateCamera``).

        Args:
            path: the .yml / .yaml / .xml file.
            which: key of the camera matrix, e.g. "M1" (stereo files) or "camera_matrix".
            dist_key: key of the distortion coefficients; by default "D1" for "M1", "D2" for
                "M2" and "distortion_coefficients" for "camera_matrix".
            width: image width, px; read from "image_width" in the file when not given.
            height: image height, px; read from "image_height" in the file when not given.

        OpenCV writes 4, 5, 8, 12 or 14 coefficients. Up to 5 give "plumb_bob" (k3 = 0 when
        only 4), 8 or more give "rational_polynomial"; coefficients after the eighth (thin
        prism, tilt) must be zero, since neither ROS model has them.

        Raises:
            ConfigError: missing file or key, unsupported non-zero coefficients, no image size.
        """
        import cv2  # OpenCV reads its own FileStorage dialect (%YAML:1.0, !!opencv-matrix)

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"calibration file {path} does not exist")
        if dist_key is None:
            dist_key = {"camera_matrix": "distortion_coefficients"}.get(which)
            if dist_key is None:
                dist_key = "D" + which[1:] if which.startswith("M") else f"{which}_distortion"
        fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
        try:
            values: dict[str, np.ndarray] = {}
            for key in (which, dist_key):
                node = fs.getNode(key)
                if node.empty():
                    raise ConfigError(f"{path}: no node {key!r}")
                values[key] = np.asarray(node.mat(), dtype=np.float64)
            size = {}
            for key, given in (("image_width", width), ("image_height", height)):
                node = fs.getNode(key)
                size[key] = given if given is not None else (
                    None if node.empty() else int(node.real())
                )
        finally:
            fs.release()
        if size["image_width"] is None or size["image_height"] is None:
            raise ConfigError(f"{path}: no image_width/image_height; pass width= and height=")
        d = values[dist_key].reshape(-1)
        if d.size > 8 and np.any(d[8:] != 0):
            raise ConfigError(
                f"{path}: {dist_key} has non-zero coefficients beyond the eighth "
                f"({d[8:].tolist()}); only plumb_bob (5) and rational_polynomial (8) are supported"
            )
        if d.size not in (0, 4, 5, 8, 12, 14):
            raise ConfigError(
                f"{path}: {dist_key}: expected 4, 5, 8, 12 or 14 numbers, got {d.size}"
            )
        if d.size == 0:
            model = "none"
        elif d.size <= 5:
            model, d = "plumb_bob", np.concatenate([d, np.zeros(5 - d.size)])
        else:
            model, d = "rational_polynomial", d[:8]
        return cls(values[which], d, size["image_width"], size["image_height"], model)

    # ------------------------------------------------------------------ accessors
    @property
    def fx(self) -> float:
        """Focal length along u, px."""
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        """Focal length along v, px."""
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        """Principal point u, px."""
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        """Principal point v, px."""
        return float(self.K[1, 2])

    @property
    def has_distortion(self) -> bool:
        """Whether any distortion coefficient is non-zero."""
        return bool((self.D != 0).any())

    def opencv_distortion(self) -> np.ndarray:
        """Distortion coefficients in the layout ``cv2.projectPoints`` takes, (n,) float64."""
        return self.D.numpy().copy()

    # ------------------------------------------------------------------ maths
    def _k_like(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.K.to(dtype=x.dtype, device=x.device), self.D.to(dtype=x.dtype, device=x.device)

    def distort_normalized(self, xy: Tensor) -> Tensor:
        """Apply the lens distortion to normalised pinhole coordinates.

        Args:
            xy: (..., 2) ideal normalised coordinates (X/Z, Y/Z), camera optical frame.

        Returns:
            (..., 2) distorted normalised coordinates (before K).
        """
        _, D = self._k_like(xy)
        if D.numel() == 0:
            return xy
        k1, k2, p1, p2, k3, k4, k5, k6 = _coefficients(D)
        x, y = xy[..., 0], xy[..., 1]
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        return torch.stack([xd, yd], dim=-1)

    def project(self, points_cam: Tensor) -> Tensor:
        """Project camera-frame points to distorted pixels (as ``cv2.projectPoints``).

        Args:
            points_cam: (B, N, 3) points in the camera optical frame, m (any leading dims,
                e.g. (N, 3), are kept). Points with z <= 0 give meaningless (or inf) pixels,
                as in OpenCV; callers mask them.

        Returns:
            (B, N, 2) px, u right, v down, in the dtype and on the device of `points_cam`.

        Raises:
            ShapeError: the last dimension is not 3.
        """
        points_cam = torch.as_tensor(points_cam)
        check_shape(points_cam, "...,3", name="points_cam")
        if not points_cam.is_floating_point():
            points_cam = points_cam.to(torch.float64)
        K, _ = self._k_like(points_cam)
        xy = points_cam[..., :2] / points_cam[..., 2:3]
        xy_d = self.distort_normalized(xy)
        u = K[0, 0] * xy_d[..., 0] + K[0, 1] * xy_d[..., 1] + K[0, 2]
        v = K[1, 1] * xy_d[..., 1] + K[1, 2]
        return torch.stack([u, v], dim=-1)

    def undistort_normalized(self, xy_d: Tensor) -> Tensor:
        """Invert the lens distortion on normalised coordinates (Newton's method).

        Starts from the distorted point and takes `UNDISTORT_NEWTON_STEPS` Newton steps with the
        analytic 2x2 Jacobian of the distortion (OpenCV's fixed-point iteration converges only
        linearly and needs tens of steps near the corners of a strongly distorted image).

        Args:
            xy_d: (..., 2) distorted normalised coordinates.

        Returns:
            (..., 2) ideal normalised coordinates (X/Z, Y/Z).
        """
        _, D = self._k_like(xy_d)
        if D.numel() == 0 or not bool((D != 0).any()):
            return xy_d
        k1, k2, p1, p2, k3, k4, k5, k6 = _coefficients(D)
        xy = xy_d
        for _ in range(UNDISTORT_NEWTON_STEPS):
            x, y = xy[..., 0], xy[..., 1]
            r2 = x * x + y * y
            a = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
            b = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
            da = k1 + r2 * (2 * k2 + 3 * k3 * r2)
            db = k4 + r2 * (2 * k5 + 3 * k6 * r2)
            radial = a / b
            dradial = (da * b - a * db) / (b * b)  # d radial / d r2
            fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xy_d[..., 0]
            fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - xy_d[..., 1]
            j11 = radial + 2 * x * x * dradial + 2 * p1 * y + 6 * p2 * x
            j12 = 2 * x * y * dradial + 2 * p1 * x + 2 * p2 * y
            j22 = radial + 2 * y * y * dradial + 6 * p1 * y + 2 * p2 * x
            det = j11 * j22 - j12 * j12
            dx = (j22 * fx - j12 * fy) / det
            dy = (j11 * fy - j12 * fx) / det
            xy = torch.stack([x - dx, y - dy], dim=-1)
        return xy

    def undistort_points(self, uv: Tensor) -> Tensor:
        """Remove the lens distortion from pixel coordinates.

        Args:
            uv: (B, N, 2) distorted px, u right, v down (any leading dims are kept).

        Returns:
            (B, N, 2) px of the ideal pinhole image with the same K (as
            ``cv2.undistortPoints(uv, K, D, P=K)``, but converged: within 1e-6 px inside the
            image), in the dtype and on the device of `uv`.

        Raises:
            ShapeError: the last dimension is not 2.
        """
        uv = torch.as_tensor(uv)
        check_shape(uv, "...,2", name="uv")
        if not uv.is_floating_point():
            uv = uv.to(torch.float64)
        K, _ = self._k_like(uv)
        y_d = (uv[..., 1] - K[1, 2]) / K[1, 1]
        x_d = (uv[..., 0] - K[0, 2] - K[0, 1] * y_d) / K[0, 0]
        xy = self.undistort_normalized(torch.stack([x_d, y_d], dim=-1))
        u = K[0, 0] * xy[..., 0] + K[0, 1] * xy[..., 1] + K[0, 2]
        v = K[1, 1] * xy[..., 1] + K[1, 2]
        return torch.stack([u, v], dim=-1)

    def batched_K(self, batch: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
        """K repeated over a batch: (batch, 3, 3), for solvers that take one K per sample."""
        return self.K.to(dtype).expand(batch, 3, 3).clone()

    # ------------------------------------------------------------------ image operations
    def scaled(self, sx: float, sy: float) -> CameraModel:
        """The camera of the image resized by factors `sx`, `sy` (e.g. ``cv2.resize``).

        Exact under the pixel-centre convention: a point at u maps to ``sx * (u + 0.5) - 0.5``,
        so ``fx' = sx fx`` and ``cx' = sx (cx + 0.5) - 0.5`` (likewise for v). Distortion
        coefficients act on normalised coordinates and do not change.

        Raises:
            ConfigError: a non-positive factor, or one that does not give a whole number of
                pixels (``width * sx``); use `resized` to name the new size instead.
        """
        new_size = []
        for name, s, n in (("sx", sx, self.width), ("sy", sy, self.height)):
            if not (math.isfinite(s) and s > 0):
                raise ConfigError(f"{name}: expected a finite factor > 0, got {s!r}")
            m = n * s
            if abs(m - round(m)) > 1e-6 or round(m) < 1:
                raise ConfigError(
                    f"{name}={s!r} turns {n} px into {m:g} px, not a whole number; "
                    "use resized(width, height)"
                )
            new_size.append(int(round(m)))
        K = self.K.clone()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = sx * (K[0, 2] + 0.5) - 0.5
        K[1, 1] *= sy
        K[1, 2] = sy * (K[1, 2] + 0.5) - 0.5
        return CameraModel(K, self.D.clone(), new_size[0], new_size[1], self.distortion_model)

    def resized(self, width: int, height: int) -> CameraModel:
        """The camera of the image resized to `width` x `height` px (``cv2.resize(dsize=...)``).

        Raises:
            ConfigError: a non-positive size.
        """
        for name, value in (("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        return self.scaled(width / self.width, height / self.height)

    def binned(self, bx: int, by: int) -> CameraModel:
        """The camera of the image binned by `bx` x `by` pixels (each output pixel one block).

        Output pixel j covers input pixels ``bx j .. bx j + bx - 1``, whose centres average to
        ``bx j + (bx - 1) / 2``; so a point at u maps to ``(u + 0.5) / bx - 0.5``: ``fx' = fx /
        bx``, ``cx' = (cx + 0.5) / bx - 0.5`` (likewise for v), exact under the pixel-centre
        convention. The size is ``width // bx`` x ``height // by`` (an incomplete block at the
        right or bottom edge is dropped, as sensors and image_geometry do). Distortion acts on
        normalised coordinates and does not change.

        Raises:
            ConfigError: a factor that is not a positive integer, or one larger than the image.
        """
        for name, b, n in (("bx", bx, self.width), ("by", by, self.height)):
            if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or not 0 < b <= n:
                raise ConfigError(f"{name}: expected an integer in [1, {n}], got {b!r}")
        K = self.K.clone()
        K[0, :2] /= bx  # fx and skew
        K[1, 1] /= by
        K[0, 2] = (K[0, 2] + 0.5) / bx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) / by - 0.5
        return CameraModel(K, self.D.clone(), self.width // int(bx), self.height // int(by),
                           self.distortion_model)  # fmt: skip

    def cropped(self, x0: int, y0: int, width: int, height: int) -> CameraModel:
        """The camera of the sub-image ``image[y0:y0 + height, x0:x0 + width]``.

        Raises:
            ConfigError: the window is not integer or not inside the image.
        """
        for name, value in (("x0", x0), ("y0", y0), ("width", width), ("height", height)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if not (0 <= x0 and 0 <= y0 and width > 0 and height > 0
                and x0 + width <= self.width and y0 + height <= self.height):
            raise ConfigError(
                f"crop x0={x0} y0={y0} width={width} height={height} is not inside the "
                f"{self.width}x{self.height} image"
            )
        K = self.K.clone()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return CameraModel(K, self.D.clone(), int(width), int(height), self.distortion_model)

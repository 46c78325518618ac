# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Render-and-compare pose refinement on real images (ROS-free; no ROS imports).

- `refiner`: ``refine_pose(image, camera, mesh, R0, t0, settings) -> RefineResult``, the sparse
  region-based refiner (SRT3D-style contour lines, colour histograms, Gauss-Newton on se(3)).
- `contour`: contour points of a mesh's silhouette (`render_contour`, or the sparse viewpoint
  model `build_contour_model` / `ContourModel`).
- `region`: correspondence lines, colour histograms, per-line contour-location statistics;
  `ColourStatistics`, an instance's histograms carried between frames (``refine_pose``'s
  ``colour_priors`` in, `RefineResult.colours` out).

The compiled kernels (`_compiled`, numba) load on first use.
"""

from dvc_perception.refine.contour import ContourModel, build_contour_model, render_contour
from dvc_perception.refine.refiner import RefineResult, RefineSettings, refine_pose
from dvc_perception.refine.region import ColourStatistics

__all__ = [
    "ColourStatistics",
    "ContourModel",
    "RefineResult",
    "RefineSettings",
    "build_contour_model",
    "refine_pose",
    "render_contour",
]

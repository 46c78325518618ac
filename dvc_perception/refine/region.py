# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Region statistics along correspondence lines: colour histograms and contour likelihoods.

The region model of the sparse region-based trackers (RBOT: Tjaden et al., TPAMI 2019; SRT3D:
Stoiber et al., ACCV 2020 / IJCV 2022). Every contour point defines a correspondence line along
its outward normal. Pixels on the inner part of the lines feed a foreground colour histogram,
pixels on the outer part a background one; their ratio gives each pixel's foreground posterior.
Along each line, segments of `scale` pixels (coarse to fine: the refiner's pyramid) get a joint
posterior, and the most likely contour location on the line follows from the smoothed step
model ``h_f(x) = 1/2 - a tanh(x / (2 s))``: a discrete distribution over candidate positions
whose mean and variance are the Gaussian the refiner fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dvc_perception.errors import ConfigError
from dvc_perception.refine.contour import ContourPoints, kernels


@dataclass(frozen=True)
class CorrespondenceLines:
    """Correspondence lines of a contour at a pose.

    Attributes:
        centres: (N, 2) float64 projected contour points, px (u right, v down).
        normals: (N, 2) float64 unit outward normals in the image.
        inner_px: (N,) float64 extent of the silhouette along -normal, px.
        outer_px: (N,) float64 extent of the outside along +normal, px.
        valid: (N,) bool: in front of the camera, centre inside the image, non-degenerate normal.
    """

    centres: np.ndarray
    normals: np.ndarray
    inner_px: np.ndarray
    outer_px: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True)
class LineStatistics:
    """Per-line contour-location Gaussians.

    Attributes:
        mean_px: (N,) float64 most likely contour position along the line, px from its centre
            (positive: outward).
        var_px: (N,) float64 variance of that position, px^2 (the distribution's, no floor).
        nll: (N,) float64 mean negative log-likelihood per segment of the contour at the line
            centre, region term only (about 0.18 for a noise-free two-colour outline at the
            default step, log 2 = 0.69 where the colours say nothing).
        ok: (N,) bool lines that were evaluated.
    """

    mean_px: np.ndarray
    var_px: np.ndarray
    nll: np.ndarray
    ok: np.ndarray


def project_lines(contour: ContourPoints, R: np.ndarray, t: np.ndarray, K: np.ndarray,
                  width: int, height: int) -> CorrespondenceLines:
    """Lines of `contour` seen at the object-in-camera pose R (3, 3), t (3,) m with K (3, 3)."""
    n = contour.num_points
    centres = np.zeros((n, 2))
    normals = np.zeros((n, 2))
    inner = np.zeros(n)
    outer = np.zeros(n)
    valid = np.zeros(n, bool)
    kernels().project_lines(
        contour.points_obj, contour.normals_obj, contour.inner_m, contour.outer_m,
        np.ascontiguousarray(R, np.float64), np.ascontiguousarray(t, np.float64),
        np.ascontiguousarray(K, np.float64), width, height, centres, normals, inner, outer,
        valid)  # fmt: skip
    return CorrespondenceLines(centres, normals, inner, outer, valid)


def histogram_shift(bins_per_channel: int) -> int:
    """Right shift of an 8-bit channel that gives its bin, for 2, 4, ..., 256 bins.

    Raises:
        ConfigError: not a power of two in [2, 256].
    """
    shift = 8 - int(round(math.log2(bins_per_channel))) if bins_per_channel > 0 else -1
    if not (0 <= shift <= 7 and (256 >> shift) == bins_per_channel):
        raise ConfigError(f"histogram bins per channel must be a power of two in [2, 256], "
                          f"got {bins_per_channel}")
    return shift


@dataclass(frozen=True)
class LineSamples:
    """Colour bins sampled along the lines (see `sample_lines`).

    Attributes:
        fg_bins: (N, L) int64 bins of the inner pixels of each line (first `fg_n[i]` valid).
        fg_n: (N,) int64 inner samples per line.
        bg_bins: (N, L) int64 bins of the outer pixels.
        bg_n: (N,) int64 outer samples per line.
        fg_counts: (B^3,) float64 inner samples per bin over all lines.
        bg_counts: (B^3,) float64 outer samples per bin over all lines.
    """

    fg_bins: np.ndarray
    fg_n: np.ndarray
    bg_bins: np.ndarray
    bg_n: np.ndarray
    fg_counts: np.ndarray
    bg_counts: np.ndarray


def sample_lines(image: np.ndarray, lines: CorrespondenceLines, bins_per_channel: int,
                 offset_px: float, length_px: float) -> LineSamples:
    """Colour bins of the pixels on the inner and outer parts of every valid line.

    Args:
        image: (H, W, 3) uint8 RGB.
        lines: the correspondence lines at the current pose.
        bins_per_channel: B (power of two); colours fall in B^3 bins.
        offset_px: pixels nearer the contour than this are skipped (the pose is uncertain).
        length_px: pixels farther than this along a line are skipped; the inner part also ends
            where the silhouette does (`inner_px`), the outer where it starts again.

    Returns:
        `LineSamples`.
    """
    shift = histogram_shift(bins_per_channel)
    n = lines.centres.shape[0]
    cap = int(math.floor(length_px)) + 2
    nb = bins_per_channel ** 3
    out = LineSamples(np.zeros((n, cap), np.int64), np.zeros(n, np.int64),
                      np.zeros((n, cap), np.int64), np.zeros(n, np.int64), np.zeros(nb),
                      np.zeros(nb))
    kernels().line_samples(
        image, lines.centres, lines.normals, lines.inner_px, lines.outer_px, lines.valid,
        float(offset_px), float(length_px), shift, bins_per_channel, out.fg_bins, out.fg_n,
        out.bg_bins, out.bg_n, out.fg_counts, out.bg_counts)  # fmt: skip
    return out


def posterior_table(hist_f: np.ndarray, hist_b: np.ndarray, prior_count: float = 1.0
                    ) -> np.ndarray:
    """Per-bin foreground posterior ``p_f = P(y | f) / (P(y | f) + P(y | b))`` (equal priors).

    Args:
        hist_f: (B^3,) foreground counts (or normalised frequencies).
        hist_b: (B^3,) background counts.
        prior_count: pseudo-count spread evenly over all bins of each histogram before
            normalising, so unseen colours get 0.5 rather than 0/0.

    Returns:
        (B^3,) float64 in (0, 1).
    """
    nb = hist_f.shape[0]
    pf = (hist_f + prior_count / nb) / (hist_f.sum() + prior_count)
    pb = (hist_b + prior_count / nb) / (hist_b.sum() + prior_count)
    return pf / (pf + pb)


@dataclass(frozen=True)
class ColourModel:
    """Foreground / background colour statistics of one instance at one iteration.

    Attributes:
        bins_per_channel: B.
        foreground: (B^3,) float64 global foreground frequencies (sum 1).
        background: (B^3,) float64 global background frequencies (sum 1).
        samples: the line samples the local histograms are built from.
        local_radius_px: lines within this distance pool their samples into a local histogram
            (0: the global histograms only).
        local_prior: pseudo-samples of the global histogram blended into each local one.
    """

    bins_per_channel: int
    foreground: np.ndarray
    background: np.ndarray
    samples: LineSamples
    local_radius_px: float = 0.0
    local_prior: float = 50.0

    def table(self) -> np.ndarray:
        """(B^3,) global per-bin foreground posterior."""
        return posterior_table(self.foreground, self.background, prior_count=1e-3)


@dataclass(frozen=True)
class ColourStatistics:
    """An instance's foreground / background colour histograms, carried from frame to frame.

    What `refiner.refine_pose` takes as a prior per instance and returns per instance (the
    SRT3D tracker's persistent colour histograms: Stoiber et al., IJCV 2022).

    Attributes:
        foreground: (B^3,) float64 foreground colour frequencies (sum 1), B bins per channel.
        background: (B^3,) float64 background colour frequencies (sum 1).
    """

    foreground: np.ndarray
    background: np.ndarray


def blend_histograms(prior: np.ndarray, counts: np.ndarray, rate: float) -> np.ndarray:
    """``(1 - rate) * prior + rate * counts / counts.sum()``: a running histogram's update.

    Args:
        prior: (B^3,) frequencies (sum 1).
        counts: (B^3,) new counts (sum > 0).
        rate: learning rate in (0, 1].

    Returns:
        (B^3,) float64 frequencies (sum 1).
    """
    return (1.0 - rate) * prior + rate * (counts / counts.sum())


def line_statistics(image: np.ndarray, colours: ColourModel, lines: CorrespondenceLines,
                    scale: int, function_length: int, distribution_length: int,
                    amplitude: float, slope: float, min_posterior: float,
                    edge_weight: float = 0.0) -> LineStatistics:
    """Contour-location distribution of every valid line (see `_compiled.line_distributions`).

    Args:
        image: (H, W, 3) uint8 RGB.
        colours: the colour statistics (global and local histograms).
        lines: correspondence lines.
        scale: segment length, px.
        function_length: F, segments on each candidate's window (even).
        distribution_length: D, candidate positions, `scale` px apart (odd).
        amplitude: smoothed step amplitude a in (0, 0.5).
        slope: smoothed step slope s, segments.
        min_posterior: per-pixel posteriors are clamped to [min, 1 - min].
        edge_weight: weight of the colour-step (edge) term per candidate (0: region only).

    Returns:
        `LineStatistics`.
    """
    n = lines.centres.shape[0]
    mean = np.zeros(n)
    var = np.zeros(n)
    nll = np.zeros(n)
    ok = np.zeros(n, bool)
    b = colours.bins_per_channel
    smp = colours.samples
    kernels().line_distributions(
        image, colours.table(), histogram_shift(b), b, lines.centres, lines.normals,
        lines.valid, int(scale), int(function_length), int(distribution_length),
        float(amplitude), float(slope), float(min_posterior), float(colours.local_radius_px),
        smp.fg_bins, smp.fg_n, smp.bg_bins, smp.bg_n, colours.foreground, colours.background,
        float(colours.local_prior), float(edge_weight), mean, var, nll, ok)  # fmt: skip
    return LineStatistics(mean, var, nll, ok)

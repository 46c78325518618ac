# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""refine_pose's colour statistics across frames: a prior is held during the frame and this
frame's histograms are blended into it at ``colour_learning_rate`` (checked against numpy);
without a prior the results are those of a refinement that never heard of priors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dvc_perception.errors import ConfigError, InputError, ShapeError
from dvc_perception.refine import ColourStatistics, RefineSettings, refine_pose
from dvc_perception.refine.region import project_lines, sample_lines

from .conftest import HEIGHT, WIDTH, K, make_frame, perturb

pytest.importorskip("numba")


def _assert_same(a, b) -> None:
    """Bitwise-equal refinement results (poses, cost, covariance, lines, colours)."""
    for name in ("R", "t", "cost", "iterations", "converged", "covariance", "num_lines"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for ca, cb in zip(a.colours, b.colours, strict=True):
        assert np.array_equal(ca.foreground, cb.foreground)
        assert np.array_equal(ca.background, cb.background)


def _random_statistics(bins: int, seed: int) -> ColourStatistics:
    rng = np.random.default_rng(seed)
    return ColourStatistics(rng.uniform(0.0, 5.0, bins ** 3), rng.uniform(0.0, 5.0, bins ** 3))


def test_no_prior_is_unchanged_and_priors_are_per_instance(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 2)
    d = demo_object.diameter_m
    starts = [perturb(frame.R, frame.t, 5.0, 0.04 * d, s) for s in (3, 4)]
    R0, t0 = np.stack([s[0] for s in starts]), np.stack([s[1] for s in starts])
    plain = refine_pose(frame.image, frame.camera, demo_model, R0, t0)
    _assert_same(plain, refine_pose(frame.image, frame.camera, demo_model, R0, t0,
                                    colour_priors=[None, None]))
    assert len(plain.colours) == 2
    for c in plain.colours:  # the running histograms are frequencies
        assert c is not None and c.foreground.sum() == pytest.approx(1.0)
        assert c.background.sum() == pytest.approx(1.0)
    # a prior on instance 0 changes instance 0 only
    prior = plain.colours[1]
    mixed = refine_pose(frame.image, frame.camera, demo_model, R0, t0,
                        colour_priors=[prior, None])
    assert not torch.equal(mixed.R[0], plain.R[0])
    assert torch.equal(mixed.R[1], plain.R[1]) and torch.equal(mixed.cost[1], plain.cost[1])
    assert np.array_equal(mixed.colours[1].foreground, plain.colours[1].foreground)


@pytest.mark.parametrize("rate", [0.2, 0.7, 1.0])
def test_prior_is_blended_with_the_frame_at_the_learning_rate(demo_object, demo_model, rate):
    frame = make_frame(demo_object.mesh, 3)
    settings = RefineSettings(colour_learning_rate=rate)
    R0, t0 = perturb(frame.R, frame.t, 4.0, 0.03 * demo_object.diameter_m, 9)
    prior = _random_statistics(settings.histogram_bins, 1)  # counts, normalised by refine_pose
    found = refine_pose(frame.image, frame.camera, demo_model, R0, t0, settings,
                        colour_priors=[prior])
    # this frame's histograms at the returned pose, blended into the prior in numpy
    R, t = found.R[0].numpy(), found.t[0].numpy()
    lines = project_lines(demo_model.contour(R, t, settings.num_points), R, t, K, WIDTH, HEIGHT)
    smp = sample_lines(frame.image, lines, settings.histogram_bins,
                       settings.histogram_offset_px, settings.histogram_length_px)
    assert smp.fg_counts.sum() > 0 and smp.bg_counts.sum() > 0
    for got, p, new in ((found.colours[0].foreground, prior.foreground, smp.fg_counts),
                        (found.colours[0].background, prior.background, smp.bg_counts)):
        want = (1.0 - rate) * p / p.sum() + rate * new / new.sum()
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert got.sum() == pytest.approx(1.0)


def test_prior_is_held_during_the_frame(demo_object, demo_model):
    """With a prior, the frame's iterations use it as given: a prior from the true pose keeps
    the refinement there, and the histograms it returns move towards this frame's."""
    frame = make_frame(demo_object.mesh, 4)
    at_truth = refine_pose(frame.image, frame.camera, demo_model, frame.R, frame.t)
    R0, t0 = perturb(frame.R, frame.t, 5.0, 0.04 * demo_object.diameter_m, 11)
    with_prior = refine_pose(frame.image, frame.camera, demo_model, R0, t0,
                             colour_priors=[at_truth.colours[0]])
    err = float(np.linalg.norm(with_prior.t[0].numpy() - frame.t))
    assert err < 0.02 * demo_object.diameter_m, err
    assert bool(with_prior.converged[0])


def test_priors_are_validated(demo_object, demo_model):
    frame = make_frame(demo_object.mesh, 2, occluder=False)
    good = _random_statistics(RefineSettings().histogram_bins, 2)
    args = (frame.image, frame.camera, demo_model, frame.R, frame.t)
    with pytest.raises(ShapeError, match="colour_priors: expected 1 entries"):
        refine_pose(*args, colour_priors=[good, good])
    with pytest.raises(ShapeError, match=r"colour_priors\[0\].foreground: expected shape"):
        refine_pose(*args, colour_priors=[ColourStatistics(np.ones(8), good.background)])
    with pytest.raises(InputError, match=r"colour_priors\[0\].background: expected finite"):
        refine_pose(*args, colour_priors=[dataclasses.replace(good, background=-good.background)])
    with pytest.raises(InputError, match="expected ColourStatistics or None"):
        refine_pose(*args, colour_priors=[good.foreground])
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="colour_learning_rate"):
            RefineSettings(colour_learning_rate=bad)

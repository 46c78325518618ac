"""Shared checks of the synthesis tests."""

from __future__ import annotations

import numpy as np

from dvc_perception.synth.scenes import SceneSampler, SynthFrame


def background_only_changes(on: SceneSampler, off: SceneSampler, frames: int = 3
                            ) -> list[tuple[SynthFrame, SynthFrame, np.ndarray]]:
    """Frames 0..frames-1 of `on` (a background replaced) and `off` (the same scene without).

    Asserts they are the same scene (instance ids, depth) and that every pixel of an object or
    a distractor is unchanged (the samplers must have no camera effects). Returns (frame on,
    frame off, background mask (H, W) bool) per frame, for the background's own checks.
    """
    out = []
    for i in range(frames):
        a, b = on.sample(i), off.sample(i)
        np.testing.assert_array_equal(a.instance_ids, b.instance_ids)  # the same scene
        np.testing.assert_array_equal(a.depth, b.depth)
        background = a.instance_ids == -1
        assert background.any() and (~background).any()
        np.testing.assert_array_equal(a.rgb[~background], b.rgb[~background])
        out.append((a, b, background))
    return out

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""INT8 calibration of a zoom-crop keypoint model: crops around instances, as served."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from dvc_perception.cli import main as cli_main
from dvc_perception.engines.calibrate import model_calibration_inputs, shard_instance_crops
from dvc_perception.engines.export import export_onnx, read_model_metadata
from dvc_perception.engines.preprocess import ZoomCrop, box_from_mask
from dvc_perception.errors import ConfigError
from dvc_perception.models.keypoint_net import KeypointNet, KeypointNetConfig, KeypointNetForExport
from dvc_perception.train.checkpoints import INPUT_NAME, KEYPOINT_OUTPUTS, export_metadata

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth.scenes import SceneSampler, SynthConfig
    from dvc_perception.synth.shards import write_shards

    torch.set_num_threads(1)
    cfg = SynthConfig(width=128, height=96, fx=120.0, fy=120.0, cx=64.0, cy=48.0,
                      distance_m=(0.35, 0.5), instances_per_object=(2, 2))
    out = tmp_path_factory.mktemp("zoom_shards")
    write_shards(SceneSampler([load_object(find_object_yaml("demo_object"))], cfg, seed=2), out,
                 3, frames_per_shard=2, progress=False)
    return out


@pytest.fixture(scope="module")
def zoom_model(tmp_path_factory):
    torch.manual_seed(0)
    cfg = KeypointNetConfig(object_ids=("demo_object",), num_keypoints=9, input_width=64,
                            input_height=64, widths=(8, 8, 16, 16), blocks=(0, 0, 0, 1),
                            decoder_channels=(16, 16))
    objects = [{"object_id": "demo_object", "keypoints_obj": np.zeros((9, 3)).tolist(),
                "diameter_m": 0.1, "symmetries": None}]
    ckpt = {"model_kind": "keypoint", "model_config": dataclasses.asdict(cfg), "objects": objects,
            "provenance": {"git": {"commit": "0" * 40}, "command": ["pytest"],
                           "date": "2026-12-06", "data": {"seed": 0}, "seeds": {"train": 0}},
            "input_kind": "zoom_crop", "crop_scale": 1.5}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(KeypointNetForExport(KeypointNet(cfg)), (torch.zeros(1, 3, 64, 64),),
                           tmp_path_factory.mktemp("zoom_model") / "kp.onnx",
                           input_names=[INPUT_NAME], output_names=list(KEYPOINT_OUTPUTS),
                           metadata=export_metadata(ckpt, command=["pytest"]))


def test_a_zoom_crop_model_calibrates_on_a_crop_of_every_instance(shards, zoom_model):
    from dvc_perception.synth.shards import load_shards

    expected = []
    for frame in load_shards(shards):
        for k in sorted(int(v) for v in np.unique(frame.instance_ids) if v >= 0):
            crop = ZoomCrop.from_box(box_from_mask(frame.instance_ids == k), (128, 96), (64, 64),
                                     scale=1.5)
            expected.append(crop.network_input(frame.rgb))
    assert len(expected) >= 4  # two copies of the object per frame
    got = model_calibration_inputs(read_model_metadata(zoom_model), shards,
                                   input_shape=(1, 3, 64, 64))
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert len(shard_instance_crops(shards, input_shape=(1, 3, 64, 64), crop_scale=1.5,
                                    max_frames=3)) == 3
    # a static batch B (the box verifier's 16): B consecutive crops per input, the last
    # incomplete batch left out
    batched = shard_instance_crops(shards, input_shape=(4, 3, 64, 64), crop_scale=1.5)
    assert len(batched) == len(expected) // 4 >= 1
    for i, b in enumerate(batched):
        np.testing.assert_array_equal(b, np.concatenate(expected[4 * i:4 * i + 4]))
    with pytest.raises(ConfigError, match="fewer than 64 object instances"):
        shard_instance_crops(shards, input_shape=(64, 3, 64, 64), crop_scale=1.5)


def test_a_zoom_crop_model_refuses_whole_frames(zoom_model, tmp_path, capsys):
    import cv2

    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="zoom crops"):
        model_calibration_inputs(read_model_metadata(zoom_model), tmp_path / "imgs",
                                 input_shape=(1, 3, 64, 64))
    assert cli_main(["quantize", str(zoom_model), "--calib", str(tmp_path / "imgs"), "-o",
                     str(tmp_path / "q.onnx"), "--target", "onnxruntime-cpu"]) == 2
    err = capsys.readouterr().err
    assert "zoom crops" in err and "Traceback" not in err


def test_quantize_command_on_a_zoom_crop_model(shards, zoom_model, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    assert cli_main(["quantize", str(zoom_model), "--calib", str(shards), "-o", str(out),
                     "--target", "onnxruntime-cpu", "--max-frames", "4"]) == 0
    assert out.is_file() and "over 4 frames" in capsys.readouterr().out

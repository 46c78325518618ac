# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""No file a user passes runs code; corrupt checkpoints, weights and shards give typed errors."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
import torch

from dvc_perception.cli import main
from dvc_perception.errors import InputError, ModelSpecError
from dvc_perception.safe_load import load_npz, load_torch_file
from dvc_perception.train.config import PoseLossConfig, TrainConfig
from dvc_perception.train.runner import RunSpec, run_training

TOY = ["--toy", "8", "--input-size", "64x48", "--epochs", "1", "--batch-size", "4",
       "--max-steps-per-epoch", "1", "--no-progress", "--threads", "1", "--device", "cpu"]


class _Stop(RuntimeError):
    pass


class Payload:
    """Unpickling this creates `marker`: what a malicious checkpoint would run instead."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _write_evil(path: pathlib.Path, marker: pathlib.Path) -> pathlib.Path:
    """A file that looks like a training checkpoint and carries the payload."""
    torch.save({"task": "pose", "model": {"w": torch.zeros(2)}, "model_kind": "keypoint",
                "model_config": {}, "provenance": {}, "evil": Payload(marker)}, path)
    return path


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    return _write_evil(tmp_path / "evil.pt", marker), marker


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "pose"
    cfg = TrainConfig(epochs=1, batch_size=2, max_steps_per_epoch=1, progress=False,
                      device="cpu")
    spec = RunSpec(mode="pose", out_dir=str(out), toy_frames=4, input_width=64,
                   input_height=48, train=cfg, pose_loss=PoseLossConfig(pose_warmup_epochs=0))
    return spec, run_training(spec)


def _one_line_error(capsys, command: str, *names: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"dvc-perception {command}: error:"), err
    assert "Traceback" not in err
    for name in names:
        assert name in lines[0], err
    return lines[0]


def test_the_payload_is_live_when_loaded_unsafely(tmp_path):
    # the control: an unrestricted load really runs it, so the tests below mean something
    path, marker = _write_evil(tmp_path / "evil.pt", tmp_path / "ran"), tmp_path / "ran"
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_load_helper_refuses_the_payload_without_running_it(evil):
    path, marker = evil
    with pytest.raises(ModelSpecError, match="refused without running it") as info:
        load_torch_file(path, what="training checkpoint")
    assert str(path) in str(info.value)
    assert "objects other than tensors and plain Python types" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("with_out", [True, False])
def test_export_refuses_the_payload(evil, tmp_path, capsys, with_out, monkeypatch):
    path, marker = evil
    monkeypatch.chdir(tmp_path)
    args = ["export", str(path)] + (["--out", str(tmp_path / "x.onnx")] if with_out else [])
    assert main(args) == 2
    _one_line_error(capsys, "export", str(path), "refused without running it")
    assert not marker.exists()
    assert not (tmp_path / "x.onnx").exists()


def test_train_init_refuses_the_payload(evil, tmp_path, capsys):
    path, marker = evil
    assert main(["train", "pose", *TOY, "--init", str(path), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "train", str(path), "refused")
    assert not marker.exists()


def test_train_init_encoder_refuses_the_payload(evil, tmp_path, capsys):
    path, marker = evil
    out = str(tmp_path / "o")
    assert main(["train", "depth", *TOY, "--init-encoder", str(path), "--out", out]) == 2
    _one_line_error(capsys, "train", str(path), "refused")
    assert not marker.exists()


def test_resume_refuses_a_payload_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    marker = tmp_path / "PAYLOAD_RAN"
    _write_evil(out / "last.pt", marker)
    assert main(["train", "depth", *TOY, "--resume", "--out", str(out)]) == 2
    _one_line_error(capsys, "train", str(out / "last.pt"), "refused")
    assert not marker.exists()


def test_torch_backend_refuses_a_payload_state_dict(tmp_path):
    pytest.importorskip("onnx")
    from dvc_perception.engines.export import export_onnx
    from dvc_perception.engines.reference_nets import TinyDepthNet
    from dvc_perception.engines.torch_backend import TorchEngine

    onnx_path = tmp_path / "depth.onnx"
    meta = {"dvc_format": 1, "task": "depth", "input_size": [64, 48],
            "normalization": {"mean": [0.0] * 3, "std": [1.0] * 3},
            "provenance": {"git_commit": "0", "command": "pytest", "date": "2026-12-01",
                           "data_seed": 0},
            "architecture": {"factory": "dvc_perception.engines.reference_nets:"
                                        "build_reference_net", "kwargs": {"name": "depth"}}}
    export_onnx(TinyDepthNet().eval(), (torch.zeros(1, 3, 48, 64),), onnx_path,
                input_names=["image"], output_names=["depth"], metadata=meta)
    marker = tmp_path / "PAYLOAD_RAN"
    torch.save({"w": torch.zeros(1), "evil": Payload(marker)}, onnx_path.with_suffix(".pt"))
    with pytest.raises(ModelSpecError, match="refused without running it"):
        TorchEngine(onnx_path, device="cpu")
    assert not marker.exists()
    onnx_path.with_suffix(".pt").write_bytes(os.urandom(512))
    with pytest.raises(ModelSpecError, match=r"depth\.pt is not a torch file"):
        TorchEngine(onnx_path, device="cpu")


def _random(path, good):
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated(path, good):
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _empty(path, good):
    path.write_bytes(b"")


@pytest.mark.parametrize(("make", "says"), [(_random, "not a torch file"),
                                             (_truncated, "truncated or corrupt"),
                                             (_empty, "is empty")])
def test_export_of_a_corrupt_file_is_one_line(real_run, tmp_path, capsys, make, says):
    bad = tmp_path / "bad.pt"
    make(bad, real_run[1].last_checkpoint)
    assert main(["export", str(bad), "--out", str(tmp_path / "x.onnx")]) == 2
    _one_line_error(capsys, "export", str(bad), says)


def test_missing_and_directory_checkpoints_are_typed(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_torch_file(tmp_path / "nope.pt", what="training checkpoint")
    with pytest.raises(ModelSpecError, match="is a directory"):
        load_torch_file(tmp_path, what="training checkpoint")


def test_checkpoints_of_older_runs_with_a_torch_version_object_still_load(tmp_path):
    # before this fix provenance held torch.__version__ itself (a TorchVersion, a str subclass)
    from torch.torch_version import TorchVersion

    path = tmp_path / "old.pt"
    torch.save({"versions": {"torch": TorchVersion("2.1.0")}}, path)
    assert load_torch_file(path, what="training checkpoint") == {"versions": {"torch": "2.1.0"}}


def test_checkpoints_the_loop_writes_load_with_weights_only_and_resume(
    real_run, tmp_path, monkeypatch
):
    spec, result = real_run
    for path in (result.last_checkpoint, result.best_checkpoint):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no allowlist at all
        assert ckpt["task"] == "pose" and ckpt["epoch"] == 1
        assert isinstance(ckpt["provenance"]["versions"]["torch"], str)
    # a 2-epoch run that stops after its first epoch, then resumes from its last.pt
    import dataclasses

    import dvc_perception.train.loop as loop

    real_train = loop.train

    def stopping_train(*args, **kwargs):
        def stop(epoch, row):
            raise _Stop
        return real_train(*args, **kwargs, epoch_callback=stop)

    two = dataclasses.replace(spec, out_dir=str(tmp_path / "two"),
                              train=dataclasses.replace(spec.train, epochs=2))
    monkeypatch.setattr("dvc_perception.train.runner.train", stopping_train)
    with pytest.raises(_Stop):
        run_training(two)
    monkeypatch.setattr("dvc_perception.train.runner.train", real_train)
    assert torch.load(tmp_path / "two" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = run_training(dataclasses.replace(two, resume=True))
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert torch.load(resumed.last_checkpoint, weights_only=True)["epoch"] == 2


def test_export_of_a_loop_checkpoint_works(real_run, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "pose.onnx"
    assert main(["export", str(real_run[1].last_checkpoint), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".pt").is_file()
    assert isinstance(load_torch_file(out.with_suffix(".pt"), what="state dict"), dict)


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    from dvc_perception.render.objects import find_object_yaml, load_object
    from dvc_perception.synth import scenes as synth
    from dvc_perception.synth.shards import write_shards

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("shards")
    cfg = synth.SynthConfig(width=64, height=48, fx=60.0, fy=60.0, cx=32.0, cy=24.0,
                            distance_m=(0.3, 0.5))
    write_shards(synth.SceneSampler([load_object(find_object_yaml("demo_object"))], cfg,
                                          seed=3), out, 4, frames_per_shard=2, progress=False)
    return out


def _corrupt_copy(shard_dir, tmp_path, how):
    import shutil

    bad = tmp_path / "shards"
    shutil.copytree(shard_dir, bad)
    shard = bad / "shard_00001.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if how == "truncated" else os.urandom(len(data)))
    return bad, shard


@pytest.mark.parametrize("how", ["truncated", "random"])
def test_train_on_a_corrupt_shard_is_one_line_naming_it(shard_dir, tmp_path, capsys, how):
    bad, shard = _corrupt_copy(shard_dir, tmp_path, how)
    args = ["train", "depth", "--data", str(bad), "--input-size", "64x48", "--epochs", "1",
            "--no-progress", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    line = _one_line_error(capsys, "train", str(shard), "not readable", "dvc-perception synth")
    assert "shard_00000" not in line


def test_shard_readers_raise_input_error(shard_dir, tmp_path):
    from dvc_perception.synth.shards import load_shards
    from dvc_perception.train.shards import ShardFrameSource

    bad, shard = _corrupt_copy(shard_dir, tmp_path, "truncated")
    with pytest.raises(InputError, match="shard_00001.npz is not readable"):
        ShardFrameSource(bad)
    reader = load_shards(bad)
    assert reader[0].rgb.shape == (48, 64, 3)  # the intact shard still reads
    with pytest.raises(InputError, match="shard_00001.npz"):
        reader[2]


def test_npz_needing_pickle_or_lacking_arrays_is_refused(tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, rgb=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="not readable"):
        load_npz(obj, what="synthetic shard")
    plain = tmp_path / "plain.npz"
    np.savez(plain, rgb=np.zeros(2))
    with pytest.raises(InputError, match=r"lacks the arrays \['depth'\]"):
        load_npz(plain, ["rgb", "depth"], what="synthetic shard")
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros(2))
    with pytest.raises(InputError, match="not an .npz archive"):
        load_npz(npy, what="synthetic shard")

# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch

from dvc_perception.errors import ConfigError, ModelSpecError
from dvc_perception.train.config import DepthLossConfig, PoseLossConfig, TrainConfig
from dvc_perception.train.device import cpu_bf16_supported
from dvc_perception.train.runner import RunSpec, run_training


class _Crash(RuntimeError):
    pass


def _depth_spec(out, epochs=2, resume=False):
    return RunSpec(mode="depth", out_dir=str(out), toy_frames=8, input_width=64,
                   input_height=48, resume=resume, depth_loss=DepthLossConfig(),
                   train=TrainConfig(epochs=epochs, batch_size=4, lr=3e-3, progress=False,
                                     seed=5))


@pytest.mark.slow
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    straight = run_training(_depth_spec(tmp_path / "a"))
    # crash after the first epoch (its checkpoint is written), then resume
    import dvc_perception.train.loop as loop

    real_train = loop.train

    def crashing_train(*args, **kwargs):
        def boom(epoch, row):
            if epoch == 0:
                raise _Crash()
        return real_train(*args, **kwargs, epoch_callback=boom)

    monkeypatch.setattr("dvc_perception.train.runner.train", crashing_train)
    with pytest.raises(_Crash):
        run_training(_depth_spec(tmp_path / "b"))
    monkeypatch.setattr("dvc_perception.train.runner.train", real_train)
    first = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert first["epoch"] == 1
    resumed = run_training(_depth_spec(tmp_path / "b", resume=True))
    a = torch.load(straight.last_checkpoint, weights_only=False)["model"]
    b = torch.load(resumed.last_checkpoint, weights_only=False)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    prov = json.loads((tmp_path / "b" / "provenance.json").read_text())
    assert len(prov["resumes"]) == 1 and prov["resumes"][0]["start_epoch"] == 1


def test_run_writes_log_plot_and_provenance(tmp_path):
    result = run_training(_depth_spec(tmp_path, epochs=2))
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_silog", "train_l1_m", "val_abs_rel", "val_rmse_m", "val_delta_1_25"} <= set(
        rows[0])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert len(prov["git"]["commit"]) in (40, 7) or prov["git"]["commit"] == "unknown"
    assert prov["seeds"]["train"] == 5
    assert prov["data"]["kind"] == "toy" and prov["data"]["frames"] == 8
    assert "command" in prov and "final" in prov
    assert result.best_checkpoint.is_file()


def test_resume_without_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        run_training(_depth_spec(tmp_path, resume=True))


@pytest.mark.slow
def test_pose_training_overfits_a_few_frames_with_the_pose_loss(tmp_path):
    spec = RunSpec(
        mode="pose", out_dir=str(tmp_path), toy_frames=8, input_width=128, input_height=96,
        augment=None,
        pose_loss=PoseLossConfig(pose_warmup_epochs=0, pose=0.05),
        train=TrainConfig(epochs=10, batch_size=4, lr=5e-3, progress=False, seed=0, val_every=10),
    )
    result = run_training(spec)
    first, last = result.history[0], result.history[-1]
    assert "train_pose_px" in first and last["train_pose_ok"] > 0.5
    assert last["train_heatmap"] < 0.8 * first["train_heatmap"]
    assert last["train_keypoint_px"] < 0.85 * first["train_keypoint_px"]
    assert last["train_mask"] < 0.5 * first["train_mask"]
    for key in ("val_add_recall", "val_rot_err_deg_median", "val_trans_err_m_median",
                "val_kp_err_px_median", "val_mask_iou"):
        assert key in last


def test_a_non_finite_gradient_skips_the_step_instead_of_poisoning_the_weights(tmp_path):
    from dvc_perception.models.depth_net import DepthNet, DepthNetConfig
    from dvc_perception.train.datasets import DepthDataset, ListFrameSource
    from dvc_perception.train.loop import train
    from dvc_perception.train.tasks import DepthTask
    from dvc_perception.train.toy import toy_frames

    class NanOnce(DepthTask):
        calls = 0

        def loss(self, model, batch, epoch):
            total, parts = super().loss(model, batch, epoch)
            NanOnce.calls += 1
            if NanOnce.calls == 1:  # finite loss value, NaN gradient
                total = total + torch.sqrt(0.0 * next(model.parameters()).sum())
            return total, parts

    torch.manual_seed(0)
    model = DepthNet(DepthNetConfig(input_width=64, input_height=48))
    frames = ListFrameSource(toy_frames(4, width=64, height=48))
    ds = DepthDataset(frames, 64, 48)
    result = train(NanOnce(300.0, DepthLossConfig()), model, ds, ds,
                   TrainConfig(epochs=1, batch_size=2, progress=False), tmp_path)
    assert result.history[0]["skipped_steps"] == 1.0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_init_starts_from_a_checkpoints_weights_and_checks_the_architecture(tmp_path):
    import dataclasses

    first = run_training(_depth_spec(tmp_path / "a", epochs=1))
    # zero learning rate: the fine-tuned weights are exactly the initial checkpoint's
    spec = dataclasses.replace(
        _depth_spec(tmp_path / "b", epochs=1), init_checkpoint=str(first.last_checkpoint),
        train=TrainConfig(epochs=1, batch_size=4, lr=1e-12, progress=False, seed=9))
    tuned = run_training(spec)
    a = torch.load(first.last_checkpoint, weights_only=False)["model"]
    b = torch.load(tuned.last_checkpoint, weights_only=False)["model"]
    for key in a:
        if a[key].is_floating_point() and "running" not in key:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9, msg=key)
    prov = json.loads((tmp_path / "b" / "provenance.json").read_text())
    assert prov["init_checkpoint"] == str(first.last_checkpoint)
    other = dataclasses.replace(spec, out_dir=str(tmp_path / "c"), depth_net={"focal0_px": 250.0})
    with pytest.raises(ConfigError, match="network configuration"):
        run_training(other)


def test_precision_must_be_fp32_or_bf16():
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.skipif(
    not cpu_bf16_supported(),
    reason="this CPU has no native bfloat16 (AVX512-BF16/AMX)")
def test_bf16_training_learns_like_fp32(tmp_path):
    # same seed and data: mixed precision follows the float32 run closely (loss curve), and the
    # checkpoint holds float32 weights that load into a plain network
    runs = {}
    for precision in ("fp32", "bf16"):
        spec = _depth_spec(tmp_path / precision, epochs=3)
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train,
                                                                   precision=precision))
        runs[precision] = run_training(spec).history
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert b["train_total"] == pytest.approx(a["train_total"], rel=0.1)
    state = torch.load(tmp_path / "bf16" / "last.pt", weights_only=False)["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


def test_device_must_be_auto_cpu_or_cuda():
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the error on a machine without CUDA")
def test_cuda_training_without_a_gpu_is_a_config_error(tmp_path):
    spec = _depth_spec(tmp_path / "cuda", epochs=1)
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, device="cuda"))
    with pytest.raises(ConfigError, match="no CUDA device"):
        run_training(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_training_on_cuda_follows_the_cpu_run_and_saves_cpu_weights(tmp_path):
    # same seed, data and float32 maths: the CUDA run's losses follow the CPU run's (TF32
    # convolutions allowed, hence the tolerance); checkpoints hold CPU tensors either way
    runs = {}
    for device in ("cpu", "cuda"):
        spec = _depth_spec(tmp_path / device, epochs=2)
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, device=device))
        runs[device] = run_training(spec).history
    for a, b in zip(runs["cpu"], runs["cuda"]):
        assert b["train_total"] == pytest.approx(a["train_total"], rel=0.05)
        assert b["val_abs_rel"] == pytest.approx(a["val_abs_rel"], rel=0.05)
    state = torch.load(tmp_path / "cuda" / "last.pt", map_location="cpu",
                       weights_only=False)["model"]
    assert all(v.device.type == "cpu" for v in state.values())
    # pose training with the loss through solve_pnp (float64 on the GPU) and validation
    pose = RunSpec(mode="pose", out_dir=str(tmp_path / "pose"), toy_frames=8, input_width=64,
                   input_height=48, pose_loss=PoseLossConfig(pose_warmup_epochs=0),
                   train=TrainConfig(epochs=1, batch_size=4, progress=False, device="cuda",
                                     precision="bf16" if torch.cuda.is_bf16_supported()
                                     else "fp32"))
    row = run_training(pose).history[-1]
    assert torch.isfinite(torch.tensor(row["train_pose_px"]))
    assert 0.0 <= row["val_add_recall"] <= 1.0 and row["val_instances"] > 0


def test_init_encoder_copies_a_pose_networks_encoder_into_the_depth_network(tmp_path):
    pose = RunSpec(mode="pose", out_dir=str(tmp_path / "pose"), toy_frames=8, input_width=64,
                   input_height=48, train=TrainConfig(epochs=1, batch_size=4, progress=False))
    pose_ckpt = run_training(pose).last_checkpoint
    # zero learning rate: the depth network's encoder is exactly the pose network's
    spec = dataclasses.replace(
        _depth_spec(tmp_path / "depth", epochs=1), init_encoder=str(pose_ckpt),
        train=TrainConfig(epochs=1, batch_size=4, lr=1e-12, progress=False, seed=9))
    depth_ckpt = run_training(spec).last_checkpoint
    a = torch.load(pose_ckpt, weights_only=False)["model"]
    b = torch.load(depth_ckpt, weights_only=False)["model"]
    enc = [k for k in a if k.startswith("encoder.") and "running" not in k
           and a[k].is_floating_point()]
    assert enc
    for key in enc:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-9, msg=key)
    prov = json.loads((tmp_path / "depth" / "provenance.json").read_text())
    assert prov["init_encoder"] == str(pose_ckpt)
    narrow = dataclasses.replace(spec, out_dir=str(tmp_path / "narrow"),
                                 depth_net={"widths": (8, 16, 32, 64)})
    with pytest.raises(ConfigError, match="encoder does not match"):
        run_training(narrow)
    missing = dataclasses.replace(spec, out_dir=str(tmp_path / "missing"),
                                  init_encoder=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelSpecError, match="nope.pt does not exist"):
        run_training(missing)


def test_pose_evaluation_takes_a_parameterless_wrapper_like_an_engine_adapter(tmp_path):
    # benchmarks/eval_int8.py evaluates ONNX Runtime engines through a module without
    # parameters that returns a namespace with x2d, weights and mask_logits: same metrics
    from types import SimpleNamespace

    from dvc_perception.train.checkpoints import load_checkpoint, model_from_checkpoint
    from dvc_perception.train.datasets import ListFrameSource, PoseDataset
    from dvc_perception.train.loop import _make_loader
    from dvc_perception.train.tasks import PoseTask
    from dvc_perception.train.toy import toy_frames, toy_object

    spec = RunSpec(mode="pose", out_dir=str(tmp_path / "pose"), toy_frames=8, input_width=64,
                   input_height=48, train=TrainConfig(epochs=1, batch_size=4, progress=False))
    net = model_from_checkpoint(load_checkpoint(run_training(spec).last_checkpoint)).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = [net]  # a list: not registered, so no parameters

        def forward(self, image):
            out = self.inner[0](image)
            return SimpleNamespace(x2d=out.x2d, weights=out.weights, mask_logits=out.mask_logits)

    obj = toy_object()
    data = PoseDataset(ListFrameSource(toy_frames(6, width=64, height=48, seed=3)), [obj], 64, 48)
    task = PoseTask([obj], PoseLossConfig())
    direct = task.evaluate(net, iter(_make_loader(data, 4, sampler=None, num_workers=0,
                                                  drop_last=False)))
    wrapped = task.evaluate(Wrapper(), iter(_make_loader(data, 4, sampler=None, num_workers=0,
                                                         drop_last=False)))
    assert len(list(Wrapper().parameters())) == 0
    assert direct["val_instances"] > 0
    for key, value in direct.items():
        assert wrapped[key] == pytest.approx(value, nan_ok=True), key


def test_the_fused_optimizer_follows_plain_adamw_with_the_same_groups():
    # build_optimizer's AdamW (fused where torch has it) against torch's per-tensor AdamW:
    # decay on conv weights only, one-cycle learning rate, 5 steps of the same gradients
    from dvc_perception.train.loop import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ref = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=1, lr=3e-3, weight_decay=0.05)
    opt, sched = build_optimizer(model, cfg, steps_per_epoch=5)
    plain = torch.optim.AdamW(
        [{"params": [p.requires_grad_() for p in ref[:1]], "weight_decay": 0.05},
         {"params": [p.requires_grad_() for p in ref[1:]], "weight_decay": 0.0}], lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        for p, q in zip(model.parameters(), ref):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        for group, plain_group in zip(opt.param_groups, plain.param_groups):
            # the one-cycle schedule's learning rate and momentum (beta1)
            plain_group.update(lr=group["lr"], betas=group["betas"])
        opt.step()
        plain.step()
        sched.step()
    for p, q in zip(model.parameters(), ref):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_resume_with_another_schedule_is_one_line_not_a_crash(tmp_path, capsys):
    from dvc_perception.cli import main

    args = ["train", "pose", "--toy", "16", "--out", str(tmp_path / "run"), "--batch-size", "8",
            "--no-progress"]
    assert main([*args, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*args, "--epochs", "3", "--resume"]) == 2  # was: a raw scheduler ValueError
    err = capsys.readouterr().err
    assert "schedule of 2 steps" in err and "make 6" in err and "--init" in err
    assert "Traceback" not in err and "bug" not in err

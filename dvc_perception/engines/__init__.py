# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Inference engines behind one interface: TensorRT, ONNX Runtime and torch.

    engine = load_engine("models/pose.onnx", backend="auto", precision="fp32")
    outputs = engine.run({"image": image_nchw_float32})

Importing this package loads neither tensorrt nor onnxruntime; backends import their library
when an engine is created.
"""

from __future__ import annotations

from dvc_perception.engines.base import Engine, ModelMetadata, TensorSpec
from dvc_perception.engines.load import choose_backend, load_engine

__all__ = ["Engine", "ModelMetadata", "TensorSpec", "choose_backend", "load_engine"]

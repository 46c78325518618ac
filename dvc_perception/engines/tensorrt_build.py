# Copyright 2026 dvc_perception authors. Licensed under the Apache License, Version 2.0.
"""Build a serialized TensorRT 10 engine from an ONNX file (FP32/FP16/INT8).

`build_settings_from_options` is pure (no TensorRT): it maps a precision and options to a
`BuildSettings` record (flags, workspace bytes, one optimisation profile of (min, opt, max)
input shapes). `EngineBuilder` parses the ONNX file and returns the engine bytes, using a
timing cache and, for INT8 of a float model, an entropy calibrator. ``tensorrt`` is imported
only by `import_tensorrt`, which the runtime (`dvc_perception.engines.tensorrt_backend`) shares
along with `make_logger`; importing this module never needs TensorRT.

Precision:

- ``fp32``: no precision flag.
- ``fp16``: ``BuilderFlag.FP16``.
- ``int8`` with a QDQ ONNX (from `dvc_perception.engines.quantize`): explicit quantisation. The
  network is created ``STRONGLY_TYPED`` (TensorRT 10 then takes every precision from the
  graph's Q/DQ nodes and precision flags must not be set). ``strongly_typed=False`` instead
  builds a weakly typed network with ``BuilderFlag.INT8`` (+ FP16 for the non-quantised layers).
- ``int8`` with a float ONNX: implicit quantisation with an ``IInt8EntropyCalibrator2`` over
  real frames from option ``calibration_dir`` (images or synthetic shards). There is no random
  calibration: without real frames this is a ConfigError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvc_perception.engines.base import ModelMetadata, TensorSpec, check_options
from dvc_perception.errors import ConfigError, EngineUnavailableError, ModelSpecError
from dvc_perception.files import atomic_write_bytes

_LOG = logging.getLogger(__name__)

TENSORRT_OPTIONS: dict[str, type | tuple[type, ...]] = {
    "workspace_mib": int,  # builder memory pool limit (MemoryPoolType.WORKSPACE), MiB
    "timing_cache": str,  # path of a timing cache file, read before and written after a build
    "profile_shapes": Mapping,  # input name -> [min, opt, max] shapes (needed for dynamic dims)
    "strongly_typed": bool,  # int8 + QDQ: STRONGLY_TYPED network (default True)
    "calibration_dir": str,  # int8 from a float model: real frames (images or synthetic shards)
    "calibration_max_frames": int,  # frames used by the entropy calibrator
    "calibration_cache": str,  # calibrator cache file (TensorRT's own format)
    "builder_optimization_level": int,  # 0..5, TensorRT default 3
    "device_id": int,  # CUDA device index
}
DEFAULT_WORKSPACE_MIB = 1024

ProfileShapes = Mapping[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


@dataclass(frozen=True)
class BuildSettings:
    """Every choice the TensorRT builder makes for us, derived from precision + options.

    Attributes:
        precision: "fp32" | "fp16" | "int8".
        fp16: set ``BuilderFlag.FP16``.
        int8: set ``BuilderFlag.INT8``.
        strongly_typed: create the network with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``.
        use_calibrator: attach an ``IInt8EntropyCalibrator2`` over ``calibration_dir``.
        workspace_bytes: ``set_memory_pool_limit(MemoryPoolType.WORKSPACE, ...)``.
        profile_shapes: input name -> (min, opt, max) shapes of the optimisation profile.
        timing_cache: timing cache path, or "" for none.
        calibration_dir: frames for the calibrator, or "".
        calibration_max_frames: number of frames the calibrator reads.
        calibration_cache: calibrator cache path, or "".
        builder_optimization_level: 0..5.
        device_id: CUDA device index.
    """

    precision: str
    fp16: bool
    int8: bool
    strongly_typed: bool
    use_calibrator: bool
    workspace_bytes: int
    profile_shapes: ProfileShapes = field(default_factory=dict)
    timing_cache: str = ""
    calibration_dir: str = ""
    calibration_max_frames: int = 256
    calibration_cache: str = ""
    builder_optimization_level: int = 3
    device_id: int = 0

    def cache_settings(self) -> str:
        """The settings that change the built engine, as a canonical string for the cache key."""
        return (
            f"fp16={self.fp16};int8={self.int8};strongly_typed={self.strongly_typed};"
            f"calib={self.use_calibrator};calib_frames={self.calibration_max_frames};"
            f"ws={self.workspace_bytes};"
            f"opt={self.builder_optimization_level}"
        )


def build_settings_from_options(
    precision: str,
    options: Mapping[str, Any] | None,
    *,
    inputs: Sequence[TensorSpec],
    is_qdq: bool,
) -> BuildSettings:
    """Map a precision and TensorRT options to `BuildSettings` (pure; no TensorRT needed).

    Args:
        precision: "fp32", "fp16" or "int8".
        options: see `TENSORRT_OPTIONS`.
        inputs: the ONNX model's input specs (dynamic dims are None).
        is_qdq: whether the ONNX graph holds QuantizeLinear/DequantizeLinear nodes.

    Raises:
        ConfigError: unknown option, bad value, dynamic input without ``profile_shapes``,
            int8 of a float model without ``calibration_dir``, a QDQ model asked in fp32/fp16.
    """
    opts = check_options("tensorrt", options, TENSORRT_OPTIONS)
    if precision not in ("fp32", "fp16", "int8"):
        raise ConfigError(f"tensorrt precision must be fp32, fp16 or int8, got {precision!r}")
    if is_qdq and precision != "int8":
        raise ConfigError(
            f"the ONNX model is quantised (QDQ nodes); load it with precision='int8', "
            f"not {precision!r}"
        )
    workspace_mib = opts.get("workspace_mib", DEFAULT_WORKSPACE_MIB)
    if workspace_mib <= 0:
        raise ConfigError(f"tensorrt options: workspace_mib must be > 0, got {workspace_mib}")
    level = opts.get("builder_optimization_level", 3)
    if not 0 <= level <= 5:
        raise ConfigError(f"tensorrt options: builder_optimization_level in 0..5, got {level}")
    max_frames = opts.get("calibration_max_frames", 256)
    if max_frames < 1:
        raise ConfigError(f"tensorrt options: calibration_max_frames >= 1, got {max_frames}")
    profiles = _profile_shapes(inputs, opts.get("profile_shapes"))

    fp16 = int8 = strongly_typed = use_calibrator = False
    calibration_dir = opts.get("calibration_dir", "")
    if precision == "fp16":
        fp16 = True
    elif precision == "int8" and is_qdq:
        strongly_typed = opts.get("strongly_typed", True)
        if not strongly_typed:  # weakly typed explicit quantisation: flags enable the kernels
            int8 = fp16 = True
        if calibration_dir:
            raise ConfigError(
                "tensorrt options: calibration_dir is for float models; this QDQ model "
                "already carries its scales"
            )
    elif precision == "int8":
        if not calibration_dir:
            raise ConfigError(
                "int8 from a float ONNX needs real calibration frames: give options "
                "calibration_dir=DIR (images or synthetic shards), or quantise first with "
                "`dvc-perception quantize` (QDQ); random calibration is not offered"
            )
        if "strongly_typed" in opts and opts["strongly_typed"]:
            raise ConfigError("strongly_typed needs a QDQ model; this one is float")
        int8 = fp16 = use_calibrator = True
    if precision != "int8" and "strongly_typed" in opts:
        raise ConfigError("tensorrt options: strongly_typed only applies to int8 QDQ models")
    return BuildSettings(
        precision=precision,
        fp16=fp16,
        int8=int8,
        strongly_typed=strongly_typed,
        use_calibrator=use_calibrator,
        workspace_bytes=int(workspace_mib) << 20,
        profile_shapes=profiles,
        timing_cache=opts.get("timing_cache", ""),
        calibration_dir=calibration_dir,
        calibration_max_frames=max_frames,
        calibration_cache=opts.get("calibration_cache", ""),
        builder_optimization_level=level,
        device_id=opts.get("device_id", 0),
    )


def _profile_shapes(
    inputs: Sequence[TensorSpec], given: Mapping[str, Any] | None
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    given = dict(given or {})
    unknown = sorted(set(given) - {s.name for s in inputs})
    if unknown:
        raise ConfigError(
            f"tensorrt options: profile_shapes names unknown inputs {unknown}; "
            f"inputs: {[s.name for s in inputs]}"
        )
    out: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}
    for spec in inputs:
        if spec.name in given:
            triple = given[spec.name]
            if len(triple) != 3:
                raise ConfigError(f"profile_shapes[{spec.name!r}] must be [min, opt, max]")
            mn, opt, mx = (tuple(int(d) for d in s) for s in triple)
            for s in (mn, opt, mx):
                if len(s) != len(spec.shape) or any(
                    f is not None and f != d for f, d in zip(spec.shape, s)
                ):
                    raise ConfigError(
                        f"profile_shapes[{spec.name!r}]: {s} does not fit the input shape "
                        f"{spec.shape}"
                    )
            if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
                raise ConfigError(f"profile_shapes[{spec.name!r}]: need min <= opt <= max")
            out[spec.name] = (mn, opt, mx)
        elif any(d is None for d in spec.shape):
            raise ConfigError(
                f"input {spec.name!r} has dynamic shape {spec.shape}: give options "
                f"profile_shapes={{{spec.name!r}: [min, opt, max]}}"
            )
        else:
            static = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
            out[spec.name] = (static, static, static)
    return out


def is_qdq_model(onnx_path: str | os.PathLike[str]) -> bool:
    """Whether the ONNX graph contains QuantizeLinear / DequantizeLinear nodes."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in proto.graph.node)


def import_tensorrt() -> Any:
    """Import TensorRT and check a CUDA device exists.

    Raises:
        EngineUnavailableError: saying whether the ``tensorrt`` package, CUDA torch or a GPU is
            missing.
    """
    try:
        import tensorrt as trt
    except ImportError as err:
        raise EngineUnavailableError(
            f"TensorRT is not installed (import tensorrt failed: {err}); on a Jetson it comes "
            f"with JetPack, elsewhere `pip install tensorrt` on a machine with an NVIDIA GPU"
        ) from err
    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailableError(
            f"TensorRT {trt.__version__} is installed but torch {torch.__version__} sees no "
            f"CUDA device (a CUDA build of torch and an NVIDIA GPU are needed)"
        )
    if int(trt.__version__.split(".")[0]) < 10:
        raise EngineUnavailableError(
            f"TensorRT {trt.__version__} found; this backend uses the TensorRT 10 API"
        )
    return trt


def make_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards TensorRT messages to Python logging (INFO as DEBUG)."""

    class _Logger(trt.ILogger):  # forwards TensorRT messages to Python logging
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = {
                trt.ILogger.INTERNAL_ERROR: logging.ERROR,
                trt.ILogger.ERROR: logging.ERROR,
                trt.ILogger.WARNING: logging.WARNING,
                trt.ILogger.INFO: logging.DEBUG,
            }.get(severity, logging.DEBUG)
            _LOG.log(level, "TensorRT: %s", msg)

    return _Logger()


class EngineBuilder:
    """Builds a serialized TensorRT engine from an ONNX file with given `BuildSettings`.

    Follows the TensorRT samples' builder: parse and check every parser error, log every network
    input/output, one optimisation profile, precision flags, workspace limit, timing cache, and
    a checked ``build_serialized_network``.
    """

    def __init__(self, settings: BuildSettings) -> None:
        self._trt = import_tensorrt()
        self.settings = settings
        self._logger = make_logger(self._trt)

    def build(self, onnx_path: str | os.PathLike[str]) -> bytes:
        """Parse `onnx_path` and return the serialized engine bytes.

        Raises:
            ModelSpecError: the ONNX parser rejects the model (every parser error is listed).
            EngineUnavailableError: the build fails (TensorRT returned no engine).
        """
        trt, s = self._trt, self.settings
        builder = trt.Builder(self._logger)
        flags = 0
        if s.strongly_typed:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self._logger)
        ok = parser.parse_from_file(str(onnx_path))
        if not ok or parser.num_errors:
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelSpecError(f"TensorRT cannot parse {onnx_path}: {errors}")
        for i in range(network.num_inputs):
            t = network.get_input(i)
            _LOG.info("TensorRT input  %s %s %s", t.name, tuple(t.shape), t.dtype)
        for i in range(network.num_outputs):
            t = network.get_output(i)
            _LOG.info("TensorRT output %s %s %s", t.name, tuple(t.shape), t.dtype)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, s.workspace_bytes)
        config.builder_optimization_level = s.builder_optimization_level
        if s.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if s.int8:
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for name, (mn, opt, mx) in s.profile_shapes.items():
            profile.set_shape(name, mn, opt, mx)
        config.add_optimization_profile(profile)
        calibrator = None  # kept referenced here until the build is done
        if s.use_calibrator:
            from dvc_perception.engines.export import read_model_metadata

            meta = read_model_metadata(onnx_path)  # inputs are built as deployment builds them
            calibrator = make_entropy_calibrator(
                trt, s, network.get_input(0).name, tuple(s.profile_shapes.values())[0][1], meta
            )
            config.int8_calibrator = calibrator
            config.set_calibration_profile(profile)
        timing_cache = self._load_timing_cache(config) if s.timing_cache else None
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineUnavailableError(
                f"TensorRT build_serialized_network returned None for {onnx_path} "
                f"(settings {s.cache_settings()}); see the TensorRT log above"
            )
        if timing_cache is not None:  # the builder added this build's timings to the cache
            atomic_write_bytes(s.timing_cache, bytes(config.get_timing_cache().serialize()))
        return bytes(serialized)

    def _load_timing_cache(self, config: Any) -> Any:
        path = Path(self.settings.timing_cache)
        blob = path.read_bytes() if path.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
        return cache


def make_entropy_calibrator(
    trt: Any, settings: BuildSettings, input_name: str, shape: tuple[int, ...],
    metadata: ModelMetadata,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding real frames from ``settings.calibration_dir``.

    Inputs are built exactly as the deployed model's (`engines.calibrate.model_calibration_inputs`
    from its metadata: letterboxed or stretched whole frames, or zoom crops around instances).
    """
    import torch

    from dvc_perception.engines.calibrate import model_calibration_inputs

    frames = model_calibration_inputs(metadata, settings.calibration_dir, input_shape=shape,
                                      max_frames=settings.calibration_max_frames)

    class _Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self._frames = frames
            self._index = 0
            self._exhausted: list[int] | None = None
            self._device_buffer = torch.empty(shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return int(shape[0])

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._index >= len(self._frames):
                return self._exhausted  # TensorRT's protocol: None means no more batches
            batch = torch.from_numpy(self._frames[self._index])
            self._device_buffer.copy_(batch)
            self._index += 1
            return [int(self._device_buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            path = Path(settings.calibration_cache) if settings.calibration_cache else None
            return path.read_bytes() if path is not None and path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if settings.calibration_cache:
                atomic_write_bytes(settings.calibration_cache, bytes(cache))

    _LOG.info("INT8 entropy calibration over %d real frames for %s", len(frames), input_name)
    return _Calibrator()

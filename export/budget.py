"""Memory budget of an export: what one image costs in activations, how many images go through at a time, and an
early one-line refusal where even one image at a time cannot fit.

The activation size comes from the FP32 ONNX graph itself (ONNX shape inference at batch 1): the sum of every
float intermediate tensor. That is what ONNX Runtime's histogram calibrators (entropy, percentile) hold for each
image of a calibration stride, and an upper bound of what one forward pass needs (ONNX Runtime reuses buffers),
so batch sizes chosen from it stay inside the budget.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import onnx

from runtime.errors import UserError

GIB = 1024**3
#: copies of the weights an export process holds at once: the torch reference, the ORT session or quantizer
#: model(s) being built, and the one being verified (measured on swin_base/swin_large, see the README)
WEIGHT_COPIES = 4
_FLOAT_BYTES = {onnx.TensorProto.FLOAT: 4, onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.DOUBLE: 8}
HISTOGRAM_METHODS = ("entropy", "percentile")
FORWARD_FRACTION = 4
#: memory of a histogram calibration (entropy, percentile) per image of a stride, in summed activations: ONNX
#: Runtime makes every calibrated tensor a graph output and holds them all until the stride is reduced (measured
#: with the library's session before export.calibrate: about 1.6 x per image on swin_base and resnet50). MinMax
#: reduces each tensor as soon as it exists (export.calibrate) and costs one forward pass per image.
CALIBRATION_FACTOR = 2


@dataclasses.dataclass
class MemoryPlan:
    """Sizes an export works with (bytes; images).

    ``batch_size`` is the verification forward batch; ``stride`` the number of calibration images run and reduced
    at a time (ONNX Runtime ``CalibStridedMinMax``, also the calibration batch); ``calibration_images`` the count
    actually used (a multiple of ``stride``); ``calibration_refusal`` the one-line reason INT8 calibration cannot
    fit, if so (the other targets still build).
    """

    limit_bytes: int
    param_bytes: int
    activation_bytes: int
    batch_size: int
    stride: int
    calibration_images: int
    calibration_refusal: str | None = None

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"memory plan: limit {self.limit_bytes / GIB:.1f} GiB, weights {self.param_bytes / GIB:.2f} GiB, "
            f"activations {self.activation_bytes / 2**20:.0f} MiB per image -> batch {self.batch_size}, "
            f"calibration stride {self.stride} x {self.calibration_images // self.stride}"
        )


def available_bytes() -> int | None:
    """Memory this process may still use: the smaller of ``MemAvailable`` and the cgroup's headroom (bytes), or
    ``None`` where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    found.extend(_cgroup_headroom())
    return min(found) if found else None


def _cgroup_headroom() -> list[int]:
    """Limit minus usage of this process's memory cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            files = (Path("/sys/fs/cgroup") / rel.lstrip("/"), "memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            files = (Path("/sys/fs/cgroup/memory") / rel.lstrip("/"), "memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        try:
            limit = (files[0] / files[1]).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                out.append(int(limit) - int((files[0] / files[2]).read_text()))
        except (OSError, ValueError):
            continue
    return out


def _without_large_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its weight tensors turned into graph inputs of the same type and shape (shape inference
    needs their shapes only; small initializers such as Reshape targets stay)."""
    graph = model.graph
    keep, moved = [], []
    for init in graph.initializer:
        if math.prod(init.dims) > 1024:
            moved.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph.input.extend(moved)
    return model


@dataclasses.dataclass
class ActivationSize:
    """Float tensors of a graph for one image (bytes): ``total`` (every intermediate and output tensor summed:
    what a histogram calibrator keeps per image) and ``largest`` (the biggest single tensor)."""

    total: int
    largest: int

    @property
    def forward(self) -> int:
        """Estimated working set of one image in a forward pass: ONNX Runtime and torch free a tensor after its
        last use, so far less than ``total`` is alive at once: a quarter of it, at least four of the largest tensor
        (swin_base at batch 32: 120 MiB per image measured in ONNX Runtime, for a total of 663 MiB)."""
        return max(self.total // FORWARD_FRACTION, 4 * self.largest, 1)


def activation_size(onnx_path: str | os.PathLike) -> ActivationSize:
    """Float activation sizes of ``onnx_path`` for one image (symbolic dimensions count as 1), from ONNX shape
    inference on the graph with its weights replaced by inputs of the same shape."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    model = onnx.shape_inference.infer_shapes(_without_large_initializers(model))
    weights = {i.name for i in model.graph.input}
    sizes = [0]
    for info in [*model.graph.value_info, *model.graph.output]:
        tt = info.type.tensor_type
        if info.name in weights or tt.elem_type not in _FLOAT_BYTES:
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in tt.shape.dim]
        sizes.append(math.prod(dims) * _FLOAT_BYTES[tt.elem_type])
    return ActivationSize(sum(sizes), max(sizes))


def _stride_for(images: int, batch: int) -> tuple[int, int]:
    """(stride, images used): the largest divisor of ``images`` not above ``batch`` when it is at least half of
    ``batch``, else ``batch`` with ``images`` trimmed to a multiple of it."""
    if images <= batch:
        return images, images
    divisor = max(d for d in range(1, batch + 1) if images % d == 0)
    if 2 * divisor >= batch:
        return divisor, images
    return batch, images - images % batch


def plan_memory(
    param_bytes: int,
    activations: ActivationSize,
    budget_gib: float,
    max_batch: int,
    calibration_images: int,
    method: str = "minmax",
    available: int | None = None,
) -> MemoryPlan:
    """Choose the forward batch and the calibration stride so that weights x ``WEIGHT_COPIES`` + one batch's
    working set, and + one calibration stride (MinMax: one forward pass per image, the stride is the forward batch;
    entropy and percentile: ``CALIBRATION_FACTOR`` x the summed activations per image), fit in ``budget_gib`` and in
    ``available`` bytes when given.

    Raises:
        UserError: one line with the estimate, when even one image at a time does not fit a forward pass (a
            calibration that does not fit is recorded in ``calibration_refusal`` instead).
    """
    limit = int(budget_gib * GIB)
    if available is not None:
        limit = min(limit, available)
    fixed = param_bytes * WEIGHT_COPIES
    room = limit - fixed
    allowed = f"the {limit / GIB:.1f} GiB allowed (memory_budget_gib {budget_gib:g}, or the memory available)"
    if room < activations.forward:
        raise UserError(
            f"export needs about {(fixed + activations.forward) / GIB:.1f} GiB (weights {param_bytes / GIB:.2f} GiB x "
            f"{WEIGHT_COPIES} copies + {activations.forward / GIB:.2f} GiB per image in flight), more than {allowed}; "
            "refused before starting"
        )
    batch = int(max(1, min(max_batch, room // activations.forward)))
    histogram = method in HISTOGRAM_METHODS
    per_image = activations.total * CALIBRATION_FACTOR if histogram else activations.forward
    refusal = None
    if room < per_image:  # MinMax: cannot happen (a forward pass of one image fits, checked above)
        refusal = (
            f"{method} calibration keeps every activation of each image of a stride ({per_image / GIB:.2f} GiB per "
            f"image), more than the {room / GIB:.2f} GiB {allowed} leaves after the weights; use int8_method: minmax"
        )
    stride, used = _stride_for(calibration_images, int(max(1, min(batch, room // max(per_image, 1)))))
    return MemoryPlan(limit, param_bytes, activations.total, batch, stride, used, refusal)

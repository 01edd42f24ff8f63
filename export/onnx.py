"""Export a checkpoint to one self-contained ONNX file with the artifact contract in ``metadata_props``.

The graph has one input ``input`` (float32, (batch, 3, H, W)) and two outputs, ``logits`` (batch, K) and
``features`` (batch, D: timm ``forward_head(x, pre_logits=True)``). Only the batch axis is dynamic: fixed-size
backbones such as Swin fail at other sizes with dynamic H/W (timm#1844). The exporter is chosen explicitly
(torch >= 2.9 defaults to dynamo with external data, see field notes), and the example batch is 2 so the batch
axis stays symbolic (pytorch#165748).

The model is traced in contiguous (NCHW) memory format: with channels_last weights (the torch engine's default)
the dynamo exporter turns timm's global average pool into ``ReduceMean -> Reshape(-1) -> Gather`` with indices
computed from ``Shape(input)`` (an identity gather of ``as_strided``). ONNX Runtime runs that fine, but on an
INT8 QDQ copy it makes OpenVINO compile the stem convolution without its bias fused, and wrongly: 88% top-1
agreement with the checkpoint instead of 99.6% (measured on resnet18, see the README, "OpenVINO INT8").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import timm
import torch

from runtime.engines.pytorch import fixed_input_size
from runtime.errors import UserError
from runtime.metadata import ONNX_META_KEY, ModelMeta

EXPORTERS = ("dynamo", "torchscript")
MIN_OPSET = 17
_PROTOBUF_LIMIT = 2 * 1024**3


class LogitsAndFeatures(torch.nn.Module):
    """Wraps a timm classifier: ``x -> (logits, pre-logit features)``, logits identical to ``model(x)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float32 (N, 3, H, W) -> (logits (N, K), features (N, D))."""
        f = self.model.forward_features(x)
        return self.model.forward_head(f, pre_logits=False), self.model.forward_head(f, pre_logits=True)


@contextmanager
def contiguous_format(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` with its 4-D parameters in contiguous (NCHW) memory format inside the block, and back in
    channels_last afterwards if they were (``Module.to`` converts in place)."""
    was_nhwc = any(
        p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last)
        for p in model.parameters()
    )
    model.to(memory_format=torch.contiguous_format)
    try:
        yield model
    finally:
        if was_nhwc:
            model.to(memory_format=torch.channels_last)


def _check_request(meta: ModelMeta, opset: int, exporter: str, dynamic_hw: bool) -> None:
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} < {MIN_OPSET}: LayerNorm would not export as LayerNormalization")
    if exporter not in EXPORTERS:
        raise UserError(f"unknown exporter {exporter!r} (choose from {', '.join(EXPORTERS)})")
    if dynamic_hw and fixed_input_size(meta.architecture):
        raise UserError(
            f"{meta.architecture} has a fixed input size (window/position embeddings): dynamic H/W would run at "
            f"{meta.input_size[1]}x{meta.input_size[2]} only and fail at other sizes (timm#1844); "
            "keep dynamic_hw: false"
        )


def _trace(wrapper: torch.nn.Module, meta: ModelMeta, out: Path, opset: int, exporter: str,
           dynamic_hw: bool) -> onnx.ModelProto:  # fmt: skip
    """The ONNX graph of ``wrapper`` (outputs ``logits``, ``features``) from the dynamo or TorchScript exporter."""
    example = torch.randn(2, *meta.input_size)
    names = {"input_names": ["input"], "output_names": ["logits", "features"]}
    with torch.no_grad():
        if exporter == "dynamo":
            axes = {0: torch.export.Dim("batch", min=1, max=65536)}
            if dynamic_hw:
                axes.update(
                    {2: torch.export.Dim("height", min=32, max=4096), 3: torch.export.Dim("width", min=32, max=4096)}
                )
            program = torch.onnx.export(wrapper, (example,), dynamo=True, external_data=False, opset_version=opset,
                                        dynamic_shapes=(axes,), optimize=True, **names)  # fmt: skip
            return program.model_proto
        tmp = out.with_suffix(".ts.onnx")
        hw = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
        torch.onnx.export(wrapper, (example,), str(tmp), dynamo=False, opset_version=opset,
                          dynamic_axes={"input": hw, "logits": {0: "batch"}, "features": {0: "batch"}},
                          **names)  # fmt: skip
        proto = onnx.load(str(tmp))
        tmp.unlink()
        return proto


def export_onnx(
    model: torch.nn.Module,
    meta: ModelMeta,
    out: str | os.PathLike,
    opset: int = 18,
    exporter: str = "dynamo",
    dynamic_hw: bool = False,
) -> Path:
    """Export ``model`` (eval mode) to ``out`` and embed ``meta`` (with ``meta.export`` filled in).

    Writes exactly ``out`` (no ``.onnx.data``) unless the weights exceed protobuf's 2 GiB limit, in which case
    the weights go to ``<out>.data`` beside it.

    ``dynamic_hw`` also makes height and width dynamic; it is refused for fixed-size backbones (timm's
    ``pretrained_cfg["fixed_input_size"]``: ViT, Swin, ...), whose graphs break at other sizes (timm#1844).

    Raises:
        UserError: unsupported opset or exporter, dynamic H/W on a fixed-size backbone, or an export whose
            axes did not come out as requested.
    """
    _check_request(meta, opset, exporter, dynamic_hw)
    out = Path(out)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with contiguous_format(model.cpu()) as nchw:
        proto = _trace(LogitsAndFeatures(nchw).eval(), meta, out, opset, exporter, dynamic_hw)
    _check_shapes(proto, meta, dynamic_hw)
    meta.export = {
        "format": "onnx",
        "precision": "fp32",
        "opset": opset,
        "exporter": exporter,
        "dynamic_axes": ["batch", "height", "width"] if dynamic_hw else ["batch"],
        "outputs": ["logits", "features"],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "onnx": onnx.__version__,
    }
    _set_meta(proto, meta)
    proto.producer_name = "imgcls-deploy"
    onnx.checker.check_model(proto) if param_bytes < _PROTOBUF_LIMIT else None
    external = param_bytes >= _PROTOBUF_LIMIT * 0.95
    onnx.save_model(proto, str(out), save_as_external_data=external, location=f"{out.name}.data")
    return out


def _set_meta(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == ONNX_META_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, meta.to_json()


def write_onnx_meta(path: str | os.PathLike, meta: ModelMeta) -> None:
    """Replace the artifact contract stored in ``path``'s ``metadata_props`` (rewrites the file in place)."""
    proto = onnx.load(str(path))
    _set_meta(proto, meta)
    onnx.save_model(proto, str(path))


def _check_shapes(proto: onnx.ModelProto, meta: ModelMeta, dynamic_hw: bool) -> None:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    if dims[0].dim_value:  # a fixed number means the exporter specialised the batch axis
        raise UserError(f"export: batch axis came out fixed at {dims[0].dim_value}; expected dynamic")
    fixed = tuple(d.dim_value for d in dims[1:])
    expected = (meta.input_size[0], 0, 0) if dynamic_hw else tuple(meta.input_size)
    if fixed != expected:
        raise UserError(f"export: input dims {fixed} differ from the expected {expected} (0 = dynamic)")

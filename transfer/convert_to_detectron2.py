"""Converts a pre-trained ResNet-50 into a detectron2 weight file for R50-C4 detection transfer.

The detection protocol of the paper (Table 6) is MoCo's: a Faster R-CNN R50-C4 fine-tuned on
VOC07+12 and tested on VOC07 with detectron2 (``transfer/train_net.py``). detectron2 reads a
``.pkl`` holding ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": True}``
and, thanks to ``matching_heuristics``, suffix-matches the names to its own modules (``res5.*``
lands in ``roi_heads.res5`` for C4). This script writes that file from the query encoder of a
``last.ckpt`` (``backbone.resnet.*``; the momentum encoder is ignored) or from a ``backbone.pt``
(a torchvision ResNet state_dict without ``fc``), renaming torchvision's keys as MoCo's
converter does:

=================================  =====================================
torchvision                        detectron2
=================================  =====================================
``conv1.weight``                   ``stem.conv1.weight``
``bn1.<p>``                        ``stem.conv1.norm.<p>``
``layer<i>.<b>.conv<k>.weight``    ``res<i+1>.<b>.conv<k>.weight``
``layer<i>.<b>.bn<k>.<p>``         ``res<i+1>.<b>.conv<k>.norm.<p>``
``layer<i>.<b>.downsample.0.*``    ``res<i+1>.<b>.shortcut.*``
``layer<i>.<b>.downsample.1.<p>``  ``res<i+1>.<b>.shortcut.norm.<p>``
=================================  =====================================

with ``<p>`` one of ``weight``, ``bias``, ``running_mean``, ``running_var``. The
``num_batches_tracked`` buffers are dropped: detectron2's ``FrozenBatchNorm2d`` has no such
buffer, and its ``SyncBN`` (``nn.SyncBatchNorm`` with the default ``momentum=0.1``) only uses the
counter when ``momentum`` is ``None``. A classifier ``fc.*`` (torchvision ImageNet weights) is
dropped with a note. Anything else is refused, not dropped silently: the unmapped keys are listed.
A ResNet-50 that lacks some tensors is refused too, with the missing keys counted and listed,
unless ``--allow-partial`` is given: then the ``.pkl`` holds only the tensors there are, one
``warning:`` line names the rest, and detectron2 keeps its initial values for them (not
recommended).

Only a standard ResNet-50 is accepted, since the C4 protocol is defined for it; a ResNet-18/34, a
CIFAR-stem model (3x3 ``conv1``, no max-pool) or a wide/grouped variant is refused with a one-line
message on stderr and exit code 2.

Examples:
    Command line::

        python transfer/convert_to_detectron2.py out/imagenet_amix-i/last.ckpt amix_r50.pkl
        python transfer/convert_to_detectron2.py out/imagenet_amix-i/backbone.pt amix_r50.pkl \\
            --author "AMix-I 200ep"

    In Python:

    >>> state, source = load_backbone_state("out/imagenet_amix-i/last.ckpt")
    >>> weights = convert(state)
    >>> weights["res2.0.conv1.norm.running_var"].shape
    (64,)
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor

QUERY_PREFIX = "backbone.resnet."
"""Where a ``last.ckpt`` keeps the query (online) encoder; ``backbone_momentum.`` is not used."""

DEFAULT_AUTHOR = "lightly-amix"
EXIT_REFUSED = 2

_BN_PARAM = r"(?P<param>weight|bias|running_mean|running_var)"
_STEM_BN = re.compile(rf"bn1\.{_BN_PARAM}")
_BLOCK = re.compile(r"layer(?P<stage>[1-4])\.(?P<block>\d+)\.(?P<rest>.+)")
_BLOCK_CONV = re.compile(r"conv(?P<k>[1-3])\.weight")
_BLOCK_BN = re.compile(rf"bn(?P<k>[1-3])\.{_BN_PARAM}")
_SHORTCUT_CONV = re.compile(r"downsample\.0\.weight")
_SHORTCUT_BN = re.compile(rf"downsample\.1\.{_BN_PARAM}")

_HPARAM_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}
_KNOWN_DEPTHS: dict[tuple[str, tuple[int, ...]], str] = {
    ("basic", (2, 2, 2, 2)): "ResNet-18",
    ("basic", (3, 4, 6, 3)): "ResNet-34",
    ("bottleneck", (3, 4, 6, 3)): "ResNet-50",
    ("bottleneck", (3, 4, 23, 3)): "ResNet-101",
    ("bottleneck", (3, 8, 36, 3)): "ResNet-152",
}
_PROTOCOL = "the R50-C4 detection protocol (MoCo's VOC setup) needs a standard ResNet-50"


class ConversionError(ValueError):
    """An input this converter refuses; the message is one line, fit for the command line."""


def detectron2_name(key: str) -> str | None:
    """The detectron2 name of a torchvision ResNet key, or ``None`` if it has none.

    ``num_batches_tracked`` and ``fc.*`` also give ``None``; :func:`convert` drops those.

    Examples:
        >>> detectron2_name("layer1.0.downsample.1.running_mean")
        'res2.0.shortcut.norm.running_mean'
        >>> detectron2_name("bn1.bias")
        'stem.conv1.norm.bias'
        >>> detectron2_name("projection_head.layers.0.weight") is None
        True
    """
    if key == "conv1.weight":
        return "stem.conv1.weight"
    if match := _STEM_BN.fullmatch(key):
        return f"stem.conv1.norm.{match['param']}"
    block = _BLOCK.fullmatch(key)
    if block is None:
        return None
    prefix = f"res{int(block['stage']) + 1}.{block['block']}."
    rest = block["rest"]
    if match := _BLOCK_CONV.fullmatch(rest):
        return f"{prefix}conv{match['k']}.weight"
    if match := _BLOCK_BN.fullmatch(rest):
        return f"{prefix}conv{match['k']}.norm.{match['param']}"
    if _SHORTCUT_CONV.fullmatch(rest):
        return f"{prefix}shortcut.weight"
    if match := _SHORTCUT_BN.fullmatch(rest):
        return f"{prefix}shortcut.norm.{match['param']}"
    return None


def is_dropped(key: str) -> bool:
    """Whether ``key`` is removed on purpose: BN ``num_batches_tracked`` and a classifier ``fc``."""
    return key.endswith("num_batches_tracked") or key in ("fc.weight", "fc.bias")


def identify_resnet(state_dict: Mapping[str, Any]) -> tuple[str, str]:
    """Names the torchvision ResNet a state_dict belongs to, from its keys alone.

    The block type comes from ``layer1.0``: a BasicBlock (ResNet-18/34) has ``conv2`` but no
    ``conv3``, a Bottleneck (ResNet-50/101/152) has ``conv3``; the depth from the number of blocks
    per stage.

    Returns:
        The name (``"ResNet-18"``, ``"ResNet-34"``, ``"ResNet-50"``, ``"ResNet-101"``,
        ``"ResNet-152"``, or a description such as ``"a BasicBlock ResNet"``) and the evidence.

    Raises:
        ConversionError: If the keys are not those of a torchvision ResNet.

    Examples:
        >>> identify_resnet(torchvision.models.resnet18().state_dict())
        ('ResNet-18', 'BasicBlock keys: layer1.0.conv2 without conv3; 2-2-2-2 blocks per stage')
    """
    if "conv1.weight" not in state_dict or "layer1.0.conv1.weight" not in state_dict:
        sample = ", ".join(list(state_dict)[:3]) or "none"
        raise ConversionError(
            "the weights are not a torchvision ResNet state_dict (no 'conv1.weight' and "
            f"'layer1.0.conv1.weight'; first keys: {sample})"
        )
    if "layer1.0.conv3.weight" in state_dict:
        kind, evidence = "bottleneck", "Bottleneck keys: layer1.0.conv3"
    elif "layer1.0.conv2.weight" in state_dict:
        kind, evidence = "basic", "BasicBlock keys: layer1.0.conv2 without conv3"
    else:
        raise ConversionError("the weights have neither 'layer1.0.conv2' nor 'layer1.0.conv3'")
    counts = []
    for stage in range(1, 5):
        blocks = {
            m["block"]
            for k in state_dict
            if (m := _BLOCK.fullmatch(k)) and m["stage"] == str(stage)
        }
        counts.append(len(blocks))
    evidence += f"; {'-'.join(map(str, counts))} blocks per stage"
    label = "Bottleneck" if kind == "bottleneck" else "BasicBlock"
    return _KNOWN_DEPTHS.get((kind, tuple(counts)), f"a {label} ResNet"), evidence


def _reference_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of ``torchvision.models.resnet50()``, built on the meta device."""
    with torch.device("meta"):
        model = torchvision.models.resnet50()
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not is_dropped(k)}


def _refuse_architecture(found: str, how: str) -> ConversionError:
    article = "" if found.startswith("a ") else "a "
    return ConversionError(
        f"the checkpoint holds {article}{found} ({how}); {_PROTOCOL}: pre-train one with "
        "--backbone resnet50."
    )


def _refuse_cifar_stem(how: str) -> ConversionError:
    return ConversionError(
        f"the checkpoint has a CIFAR-style stem ({how}: 3x3 stride-1 conv1, no max-pool); "
        f"{_PROTOCOL} with the 7x7 stride-2 stem: pre-train with model.cifar_stem=false."
    )


def _short_list(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def missing_resnet50_keys(state_dict: Mapping[str, Any]) -> list[str]:
    """The ResNet-50 tensors (``num_batches_tracked`` and ``fc`` aside) that ``state_dict`` lacks.

    Examples:
        >>> sd = torchvision.models.resnet50().state_dict()
        >>> missing_resnet50_keys({k: v for k, v in sd.items() if not k.startswith("layer4.")})[:2]
        ['layer4.0.conv1.weight', 'layer4.0.bn1.weight']
    """
    return [k for k in _reference_resnet50_shapes() if k not in state_dict]


def _is_partial_resnet50(state_dict: Mapping[str, Any], evidence: str) -> bool:
    """Bottleneck blocks, none of them beyond a ResNet-50's: a ResNet-50 with tensors missing."""
    reference = _reference_resnet50_shapes()
    named = [k for k in state_dict if not is_dropped(k) and detectron2_name(k) is not None]
    return evidence.startswith("Bottleneck") and all(k in reference for k in named)


def convert(
    state_dict: Mapping[str, Tensor], allow_partial: bool = False, source: str = "the state_dict"
) -> dict[str, np.ndarray]:
    """Renames a torchvision ResNet-50 state_dict to detectron2's names, values as numpy arrays.

    Args:
        state_dict: torchvision ResNet-50 keys (``conv1.weight``, ``layer4.2.bn3.bias``, ...);
            ``fc.*`` may be present and is dropped, as are the ``num_batches_tracked`` buffers.
        allow_partial: Convert a ResNet-50 that lacks some tensors (they are left out of the
            result, so detectron2 keeps its initial values for them) instead of refusing it;
            not recommended (``--allow-partial``).
        source: How the missing-keys message names the weights, e.g. the input path.

    Returns:
        The 265 backbone tensors of a ResNet-50 under detectron2 names (``stem.conv1.weight``,
        ``res5.2.conv3.norm.bias``, ...), as numpy copies (bfloat16 becomes float32); fewer with
        ``allow_partial`` when some are missing.

    Raises:
        ConversionError: For anything but a standard ResNet-50 (ResNet-18/34/101/152, a CIFAR
            stem, other widths or groups), for keys that have no detectron2 name (all listed),
            for missing keys (unless ``allow_partial``) and for non-tensor values.

    Examples:
        >>> sd = torchvision.models.resnet50().state_dict()
        >>> weights = convert(sd)
        >>> len(weights), weights["stem.conv1.weight"].shape
        (265, (64, 3, 7, 7))
    """
    found, evidence = identify_resnet(state_dict)
    if found != "ResNet-50" and not _is_partial_resnet50(state_dict, evidence):
        raise _refuse_architecture(found, evidence)
    conv1 = state_dict["conv1.weight"]
    if isinstance(conv1, Tensor) and tuple(conv1.shape[-2:]) == (3, 3):
        raise _refuse_cifar_stem(f"conv1.weight has shape {tuple(conv1.shape)}")

    unmapped = sorted(k for k in state_dict if not is_dropped(k) and detectron2_name(k) is None)
    if unmapped:
        raise ConversionError(
            f"{len(unmapped)} key(s) have no detectron2 name: {_short_list(unmapped)}; expected "
            "only torchvision ResNet-50 keys (conv1, bn1, layer1-4, optionally fc)."
        )
    not_tensors = sorted(k for k, v in state_dict.items() if not isinstance(v, Tensor))
    if not_tensors:
        raise ConversionError(f"these entries are not tensors: {_short_list(not_tensors)}")

    reference = _reference_resnet50_shapes()
    missing = missing_resnet50_keys(state_dict)
    if missing and not allow_partial:
        # The package's wording for weights that do not match (imported only here: it pulls in
        # Lightning).
        from lightly_amix.state_dicts import state_dict_mismatch_message

        expected = (
            "a complete ResNet-50 (a last.ckpt or backbone.pt as recipes/pretrain_*.py writes "
            "it with --backbone resnet50)"
        )
        raise ConversionError(
            state_dict_mismatch_message(
                source, missing, [], [], len(reference), expected, model="a ResNet-50"
            )
        )
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} (expected {shape})"
        for k, shape in reference.items()
        if k in state_dict and tuple(state_dict[k].shape) != shape
    ]
    if wrong:
        raise ConversionError(
            "the weights have the layout of a ResNet-50 but other shapes (a wide or grouped "
            f"variant?): {_short_list(wrong, 3)}; {_PROTOCOL}."
        )

    converted: dict[str, np.ndarray] = {}
    for key, value in state_dict.items():
        if is_dropped(key):
            continue
        name = detectron2_name(key)
        assert name is not None  # checked above
        tensor = value.detach().to("cpu")
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        converted[name] = tensor.numpy().copy()
    return converted


def _read_torch_file(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; memory-mapped when the format allows it."""
    if not path.is_file():
        raise ConversionError(f"'{path}' does not exist or is not a file.")
    with open(path, "rb") as f:
        magic = f.read(4)
    # torch.save writes a zip archive (a legacy file is a sequence of pickles, starting with 0x80)
    if magic != b"PK\x03\x04" and magic[:1] != b"\x80":
        raise ConversionError(
            f"'{path}' is not a PyTorch file (neither torch.save's zip format nor a pickle); "
            "expected a last.ckpt or backbone.pt written by recipes/pretrain_*.py."
        )
    mmap = zipfile.is_zipfile(path)  # only an intact zip archive can be memory-mapped
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise ConversionError(
            f"'{path}' is not a readable PyTorch checkpoint ({_load_error_summary(exc)}); "
            "expected a last.ckpt or backbone.pt written by recipes/pretrain_*.py."
        ) from exc


def _load_error_summary(exc: Exception) -> str:
    """One line from a ``torch.load`` error, without its advice to drop ``weights_only``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        # The useful part follows "WeightsUnpickler error:"; the rest is generic advice.
        text = " ".join(lines)
        after = text.partition("WeightsUnpickler error:")[2]
        detail = after.partition("Check the documentation")[0].strip() or "unsupported content"
        return f"torch.load(weights_only=True) refused it: {detail}"
    first_sentence = lines[0].split(". ")[0][:160] if lines else "no message"
    return f"{type(exc).__name__}: {first_sentence}"


def load_backbone_state(path: str | Path) -> tuple[dict[str, Tensor], str]:
    """Reads the backbone weights of a ``last.ckpt`` or a ``backbone.pt``, told apart by content.

    A dict with a ``state_dict`` entry is a Lightning checkpoint: it is read with
    :func:`lightly_amix.checkpoints.load_checkpoint`, its hyper-parameters must name a
    ``resnet50`` without the CIFAR stem, and the query encoder (``backbone.resnet.*``) is taken.
    A dict of tensors is a ``backbone.pt`` (torchvision keys). Both are loaded with
    ``weights_only=True``.

    Returns:
        The torchvision-named state_dict and a description of where it came from.

    Raises:
        ConversionError: If the file is missing, unreadable, of another kind, or its
            hyper-parameters name another backbone or the CIFAR stem.

    Examples:
        >>> state, source = load_backbone_state("out/stl10_amix-i/backbone.pt")
        >>> source
        'torchvision state_dict (backbone.pt)'
    """
    path = Path(path)
    content = _read_torch_file(path)
    if isinstance(content, dict) and "state_dict" in content:
        del content  # read again, fully and validated, by the package's own reader
        from lightly_amix.checkpoints import load_checkpoint, sub_state_dict
        from lightly_amix.models.backbones import merge_split_bn_statistics

        try:
            ckpt = load_checkpoint(path)
        except (FileNotFoundError, ValueError) as exc:
            raise ConversionError(str(exc)) from exc
        model_cfg = ckpt["hyper_parameters"]["model"]
        backbone = str(model_cfg.get("backbone", "unknown"))
        if backbone != "resnet50":
            found = _HPARAM_NAMES.get(backbone, f"a '{backbone}' backbone")
            raise _refuse_architecture(found, f"hyper-parameters: backbone={backbone}")
        if model_cfg.get("cifar_stem", False):
            raise _refuse_cifar_stem("hyper-parameters: cifar_stem=true")
        state = sub_state_dict(ckpt["state_dict"], QUERY_PREFIX)
        if not state:
            raise ConversionError(f"'{path}' has no query-encoder weights under '{QUERY_PREFIX}'.")
        state = merge_split_bn_statistics(state, int(model_cfg.get("bn_splits", 0)))
        return state, f"query encoder '{QUERY_PREFIX}*' of a Lightning checkpoint (last.ckpt)"
    if (
        isinstance(content, dict)
        and content
        and all(isinstance(v, Tensor) for v in content.values())
    ):
        return dict(content), "torchvision state_dict (backbone.pt)"
    kind = (
        f"a dict with keys {_short_list(list(map(str, content)), 5)}"
        if isinstance(content, dict)
        else f"a {type(content).__name__}"
    )
    raise ConversionError(
        f"'{path}' holds {kind}: neither a last.ckpt (a dict with 'state_dict') nor a backbone.pt "
        "(a dict of tensors)."
    )


class _PortablePickler(pickle.Pickler):
    """Pickles numpy arrays as ``numpy.ndarray(shape, dtype, bytearray)``.

    numpy's own reduction names ``numpy._core.multiarray._reconstruct`` under numpy 2, a module
    that numpy < 1.26 does not have; detectron2 environments often run an older numpy. This form
    only names ``numpy.ndarray`` and ``builtins.bytearray`` and gives writable arrays on load.
    """

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            array = np.ascontiguousarray(obj)
            return np.ndarray, (array.shape, array.dtype.str, bytearray(array.tobytes()))
        return NotImplemented


def save_detectron2_pickle(
    weights: Mapping[str, np.ndarray], path: str | Path, author: str = DEFAULT_AUTHOR
) -> None:
    """Writes ``{"model": weights, "__author__": author, "matching_heuristics": True}``.

    Arrays are pickled in a form that any numpy (1.x or 2.x) unpickles, with protocol 4. The
    file is written next to ``path`` first and then renamed, so an interrupted run leaves no
    truncated ``.pkl`` behind.

    Examples:
        >>> save_detectron2_pickle(convert(state), "amix_r50.pkl", author="AMix-I")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": dict(weights), "__author__": author, "matching_heuristics": True}
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        _PortablePickler(f, protocol=4).dump(payload)
    os.replace(partial, path)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="convert_to_detectron2.py",
        description="Convert the ResNet-50 of a pre-training run (last.ckpt: query encoder; or "
        "backbone.pt) into a detectron2 .pkl for R50-C4 detection transfer (transfer/README.md).",
    )
    parser.add_argument("input", type=Path, help="last.ckpt or backbone.pt of a ResNet-50 run")
    parser.add_argument("output", type=Path, help="detectron2 weight file to write (*.pkl)")
    parser.add_argument(
        "--author",
        default=DEFAULT_AUTHOR,
        help=f"the '__author__' field, logged by detectron2 (default: {DEFAULT_AUTHOR})",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="load a checkpoint that lacks some weights, keeping the model's initial values for "
        "them (not recommended)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the converter; returns 0, or 2 after one ``error:`` line on stderr.

    Examples:
        >>> main(["out/last.ckpt", "amix_r50.pkl"])
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.output.suffix != ".pkl":
            raise ConversionError(
                f"the output '{args.output}' must end in .pkl: detectron2's DetectionCheckpointer "
                "unpickles only files with that suffix (it torch.load-s any other name)."
            )
        if args.author == "Caffe2":
            raise ConversionError(
                "--author Caffe2 would make detectron2 apply its Caffe2 renames; choose another."
            )
        state, source = load_backbone_state(args.input)
        weights = convert(state, allow_partial=args.allow_partial, source=f"'{args.input}'")
    except ConversionError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    missing = missing_resnet50_keys(state)
    if missing:
        print(
            f"warning: '{args.input}' was converted partially (--allow-partial): "
            f"{len(missing)} missing ResNet-50 tensor(s) left out of the .pkl, so detectron2 "
            f"keeps its initial values for them ({_short_list(missing)}).",
            file=sys.stderr,
        )
    n_tracked = sum(k.endswith("num_batches_tracked") for k in state)
    dropped_fc = [k for k in state if k in ("fc.weight", "fc.bias")]
    print(f"Read a ResNet-50 from {args.input}: {source}, {len(state)} entries.")
    print(
        f"Dropped {n_tracked} num_batches_tracked buffers (unused by detectron2's FrozenBN/SyncBN)"
        + (f" and the classifier {', '.join(dropped_fc)}." if dropped_fc else ".")
    )
    save_detectron2_pickle(weights, args.output, author=args.author)
    n_values = sum(int(v.size) for v in weights.values())
    print(
        f"Wrote {len(weights)} tensors ({n_values:,} values) to {args.output} "
        f"(__author__={args.author!r}, matching_heuristics=True)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Comparing a state_dict with a model's and loading it strictly, with one clear message.

``module.load_state_dict(state, strict=False)`` silently keeps the initial values of whatever
is missing; :func:`load_state_dict_strict` refuses (or, with ``allow_partial``, loads the
matching tensors and says which were left out). It needs no model of this package, so every
module can use it.

Examples:
    >>> missing, unexpected = load_state_dict_strict(net, state, "backbone.pt")
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def _shape(value: Any) -> tuple[int, ...] | None:
    """The shape of a tensor or array, a shape tuple as is, ``None`` for anything else."""
    if isinstance(value, tuple):
        return value
    shape = getattr(value, "shape", None)
    return tuple(shape) if shape is not None else None


def compare_state_dicts(
    reference: dict[str, Any], state: dict[str, Any], ignore: tuple[str, ...] = ()
) -> tuple[list[str], list[str], list[str]]:
    """What keeps ``state`` from loading exactly into a model whose state_dict is ``reference``.

    Keys starting with one of ``ignore`` are left out on both sides. A ``state`` without any
    BatchNorm ``num_batches_tracked`` counter (some exporters drop them) is not missing them:
    ``load_state_dict`` keeps the module's own (they are unused unless ``momentum=None``), as
    PyTorch does with ``strict=True``. When ``state`` has counters, each one is required.

    Args:
        reference: The model's state_dict, or its keys mapped to shape tuples.
        state: The state_dict to load.
        ignore: Key prefixes that may be absent from or extra in ``state`` (e.g. ``("fc.",)``).

    Returns:
        The missing keys, the unexpected keys and, for keys on both sides with different
        shapes, descriptions like ``"conv1.weight: (64, 3, 3, 3) in the file, (64, 3, 7, 7) in
        the model"``; each in the order of its dict.

    Examples:
        >>> compare_state_dicts({"w": (2, 3), "b": (2,)}, {"w": torch.zeros(3, 3), "x": 1})
        (['b'], ['x'], ['w: (3, 3) in the file, (2, 3) in the model'])
    """
    optional = () if _has_counters(state) else ("num_batches_tracked",)
    missing = [
        k
        for k in reference
        if k not in state and not k.startswith(ignore) and not k.endswith(optional)
    ]
    unexpected = [k for k in state if k not in reference and not k.startswith(ignore)]
    wrong_shape = []
    for key, value in state.items():
        if key in reference and not key.startswith(ignore):
            found, wanted = _shape(value), _shape(reference[key])
            if found != wanted:
                shown = "not a tensor" if found is None else f"{found} in the file"
                wrong_shape.append(f"{key}: {shown}, {wanted} in the model")
    return missing, unexpected, wrong_shape


def _has_counters(state: dict[str, Any]) -> bool:
    return any(k.endswith("num_batches_tracked") for k in state)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _key_list(keys: list[str], limit: int = 8) -> str:
    """The first ``limit`` keys, then how many more there are."""
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")


def state_dict_mismatch_message(
    source: str,
    missing: list[str],
    unexpected: list[str],
    wrong_shape: list[str],
    total: int,
    expected: str | None = None,
    model: str = "the model",
) -> str:
    """The one-line error for weights that do not match a model (see
    :func:`load_state_dict_strict`).

    Args:
        source: The file (or part of it) the weights came from.
        missing: Keys of the model that the weights lack.
        unexpected: Keys of the weights that the model lacks.
        wrong_shape: Descriptions of the tensors whose shapes differ (from
            :func:`compare_state_dicts`).
        total: How many tensors the model has (not counting ignored keys).
        expected: What file would fit, e.g. ``"a backbone.pt written by recipes/pretrain_*.py"``.
        model: How to name the model, e.g. ``"a resnet18"``.

    Examples:
        >>> state_dict_mismatch_message("b.pt", ["fc.bias"], [], [], total=2)
        "b.pt does not match the model: 1 of its 2 tensors is missing (fc.bias). Expected a \
file written for the model (the same architecture); or pass --allow-partial to load the 1 \
matching tensor anyway, keeping the model's initial values for the rest (not recommended)."
    """
    parts = []
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        parts.append(
            f"{len(missing)} of its {_plural(total, 'tensor')} {verb} missing "
            f"({_key_list(missing)})"
        )
    if unexpected:
        parts.append(f"{_plural(len(unexpected), 'unexpected key')} ({_key_list(unexpected)})")
    if wrong_shape:
        parts.append(
            f"{_plural(len(wrong_shape), 'tensor')} of the wrong shape ({_key_list(wrong_shape)})"
        )
    expected = expected or f"a file written for {model} (the same architecture)"
    if wrong_shape:
        fix = (
            f"Expected {expected}. A tensor of another shape cannot be loaded, not even with "
            "--allow-partial."
        )
    else:
        matching = total - len(missing)
        fix = (
            f"Expected {expected}; or pass --allow-partial to load the "
            f"{_plural(matching, 'matching tensor')} anyway, keeping the model's initial values "
            "for the rest (not recommended)."
        )
    return f"{source} does not match {model}: {'; '.join(parts)}. {fix}"


def partial_load_warning(source: str, missing: list[str], unexpected: list[str]) -> str:
    """The one-line warning printed after a load with ``allow_partial`` that left keys out.

    Examples:
        >>> partial_load_warning("b.pt", ["layer2.0.conv1.weight"], [])
        "warning: b.pt was loaded partially (--allow-partial): 1 missing tensor keeps the \
model's initial values (layer2.0.conv1.weight)."
    """
    parts = []
    if missing:
        verb = "keeps" if len(missing) == 1 else "keep"
        parts.append(
            f"{_plural(len(missing), 'missing tensor')} {verb} the model's initial values "
            f"({_key_list(missing)})"
        )
    if unexpected:
        verb = "was" if len(unexpected) == 1 else "were"
        parts.append(
            f"{_plural(len(unexpected), 'unexpected key')} {verb} ignored ({_key_list(unexpected)})"
        )
    return f"warning: {source} was loaded partially (--allow-partial): {'; '.join(parts)}."


def load_state_dict_strict(
    module: torch.nn.Module,
    state: dict[str, Any],
    source: str,
    allow_partial: bool = False,
    ignore: tuple[str, ...] = (),
    expected: str | None = None,
    model: str = "the model",
) -> tuple[list[str], list[str]]:
    """Loads a state_dict and refuses, with one clear message, one that does not match.

    Unlike ``module.load_state_dict(state, strict=False)``, which silently keeps the initial
    values of whatever is missing, this raises unless every tensor of ``module`` is in
    ``state`` with its shape and ``state`` has nothing else (keys under ``ignore`` aside). With
    ``allow_partial`` the matching tensors are loaded, what was left out is returned and one
    ``warning:`` line is printed on stderr; a tensor of another shape is still an error, since
    it cannot be loaded at all. Nothing is loaded when it raises.

    Args:
        module: The model to load into.
        state: Its weights, e.g. from ``torch.load(path, weights_only=True)``.
        source: How messages name the weights, e.g. the file path.
        allow_partial: Load the matching tensors of a state_dict that lacks some or has extra
            ones (the command-line flag ``--allow-partial``; not recommended).
        ignore: Key prefixes that may be absent from or extra in ``state``, e.g. ``("fc.",)``
            for a ResNet without its classifier.
        expected: What file would fit, for the message (default: one written for the model).
        model: How the message names the model, e.g. ``"a resnet18"``.

    Returns:
        The missing keys (left at the module's initial values) and the unexpected keys (not
        loaded); both empty unless ``allow_partial``.

    Raises:
        ValueError: If ``state`` has tensors of the wrong shape, or (unless ``allow_partial``)
            missing or unexpected keys. The message names ``source``, counts each kind,
            lists up to 8 keys of each and says how to fix it.

    Examples:
        >>> net = torchvision.models.resnet18()
        >>> state = {k: v for k, v in net.state_dict().items() if not k.startswith("layer2.")}
        >>> load_state_dict_strict(net, state, "b.pt")
        Traceback (most recent call last):
        ValueError: b.pt does not match the model: 30 of its 122 tensors are missing ...
        >>> missing, unexpected = load_state_dict_strict(net, state, "b.pt", allow_partial=True)
        >>> len(missing), unexpected
        (30, [])
    """
    own = module.state_dict()
    missing, unexpected, wrong_shape = compare_state_dicts(own, state, ignore)
    if wrong_shape or ((missing or unexpected) and not allow_partial):
        optional = () if _has_counters(state) else ("num_batches_tracked",)
        total = sum(1 for k in own if not k.startswith(ignore) and not k.endswith(optional))
        raise ValueError(
            state_dict_mismatch_message(
                source, missing, unexpected, wrong_shape, total, expected, model
            )
        )
    matching = {k: v for k, v in state.items() if k in own and not k.startswith(ignore)}
    module.load_state_dict(matching, strict=False)
    if missing or unexpected:
        print(partial_load_warning(source, missing, unexpected), file=sys.stderr)
    return missing, unexpected

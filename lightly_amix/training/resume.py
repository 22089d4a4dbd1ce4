"""Which checkpoint a run continues from, and whether it may.

``--resume auto`` looks at every ``*.ckpt`` in the output folder and takes the one with the
most training progress (global step, then epoch) that is *valid*: it can be read, it is a
pre-training checkpoint of this package, and its weights, optimiser state and queue are
finite. The modification time plays no part, so a failed launch that wrote a fresh but
worthless file can never win over a trained one. Files that are skipped are named with the
reason. A checkpoint of another method, backbone or data set is refused, naming both runs, as
is one whose tensors do not fit the model this run builds.

Examples:
    >>> choice = resolve_resume("auto", Path("out/stl10"), RunIdentity("amix-i", "resnet18",
    ...                         "stl10"))  # doctest: +SKIP
    >>> print(choice.message)  # doctest: +SKIP
    Resuming from out/stl10/last.ckpt (step 4, epoch 1): the most training progress ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightly.models.modules.memory_bank import MemoryBankModule
from torch import Tensor, nn

from lightly_amix.checkpoints import method_from_hparams
from lightly_amix.state_dicts import compare_state_dicts
from lightly_amix.training.checkpoint_io import (
    MEMORY_BANKS_KEY,
    load_tensors_only,
    non_finite_summary,
    read_progress,
)

# The run's identity and config, stored in every checkpoint by RunInfoCallback.
RUN_KEY = "lightly_amix_run"
# Preferred among checkpoints of equal progress (they hold the same state).
_PREFERRED = ("last.ckpt", "interrupted.ckpt")


class ResumeError(ValueError):
    """A checkpoint cannot be resumed from; the message says why and what to do."""


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must share with the run that resumes it.

    Attributes:
        method: ``--method`` (``mocov2``, ``amix-i``, ...).
        backbone: ResNet name.
        dataset: Data set name, or ``None`` when unknown (checkpoints of older versions).
    """

    method: str
    backbone: str
    dataset: str | None

    def describe(self) -> str:
        dataset = self.dataset or "an unrecorded data set"
        return f"{self.method} on {self.backbone} / {dataset}"


def identity_of(ckpt: Mapping[str, Any]) -> RunIdentity:
    """The identity a checkpoint records (or, for older ones, what its hparams imply)."""
    run = ckpt.get(RUN_KEY)
    if isinstance(run, Mapping) and "method" in run:
        return RunIdentity(str(run["method"]), str(run["backbone"]), run.get("dataset"))
    hparams = ckpt.get("hyper_parameters", {})
    backbone = str(hparams.get("model", {}).get("backbone", "?"))
    return RunIdentity(method_from_hparams(hparams), backbone, None)


@dataclass
class Candidate:
    """One checkpoint file, inspected.

    Attributes:
        path: The file.
        step: Global step (optimiser steps done), ``None`` if unreadable.
        epoch: The ``epoch`` field, ``None`` if unreadable.
        problem: Why it cannot be resumed from, ``None`` if it can.
        identity: Method, backbone and data set of its run.
        shapes: Shape of every tensor of its ``state_dict``.
        model_hparams: Its ``hyper_parameters["model"]``.
    """

    path: Path
    step: int | None = None
    epoch: int | None = None
    problem: str | None = None
    identity: RunIdentity | None = None
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    model_hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def progress(self) -> tuple[int, int, int]:
        """Sort key: step, epoch, then the preferred file names among equals."""
        rank = (
            len(_PREFERRED) - _PREFERRED.index(self.path.name)
            if self.path.name in _PREFERRED
            else 0
        )
        return (self.step if self.step is not None else -1, self.epoch or -1, rank)

    def where(self) -> str:
        return f"step {self.step}, epoch {self.epoch}"


def inspect_checkpoint(path: str | Path) -> Candidate:
    """Reads a checkpoint (memory-mapped, tensors only) and checks that it can be resumed.

    Never raises for a bad file: the reason is in :attr:`Candidate.problem`.
    """
    path = Path(path)
    candidate = Candidate(path)
    if not path.is_file():
        candidate.problem = "it does not exist"
        return candidate
    try:
        ckpt: Any = load_tensors_only(path)
    except Exception as exc:  # torch raises several types for torn or foreign files
        size = path.stat().st_size
        candidate.problem = (
            f"it cannot be read: {size} bytes, truncated, empty or not a checkpoint "
            f"({_first_sentence(exc)})"
        )
        return candidate
    needed = ("state_dict", "global_step", "epoch", "hyper_parameters")
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in needed):
        candidate.problem = (
            "it is not a pre-training checkpoint of lightly_amix (no state_dict / global_step)"
        )
        return candidate
    candidate.step, candidate.epoch = int(ckpt["global_step"]), int(ckpt["epoch"])
    candidate.identity = identity_of(ckpt)
    candidate.model_hparams = dict(ckpt["hyper_parameters"].get("model", {}))
    state: dict[str, Tensor] = ckpt["state_dict"]
    candidate.shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, Tensor)}
    # The queues are not in the state_dict (Lightly keeps them non-persistent).
    for name, bank in (ckpt.get(MEMORY_BANKS_KEY) or {}).items():
        candidate.shapes[f"{name}.bank"] = tuple(bank["bank"].shape)
    problem = non_finite_summary(ckpt)
    if problem is not None:
        candidate.problem = f"{problem} (training had diverged when it was written)"
    return candidate


def _first_sentence(exc: BaseException, limit: int = 120) -> str:
    """The start of an exception's message (torch's can run to a paragraph)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0].split(". ")[0].rstrip(".")
    if " " not in first:  # e.g. KeyError: 101 (an unknown pickle opcode)
        first = f"{type(exc).__name__}: {first}"
    return first if len(first) <= limit else first[: limit - 3] + "..."


@dataclass
class ResumeChoice:
    """The outcome of :func:`resolve_resume`.

    Attributes:
        candidate: The checkpoint to resume from, ``None`` to start from scratch.
        message: What was chosen and why (printed by the recipe).
    """

    candidate: Candidate | None
    message: str

    @property
    def path(self) -> str | None:
        return str(self.candidate.path) if self.candidate else None


def checkpoint_files(output_dir: Path) -> list[Path]:
    """The checkpoint files of an output folder (``*.ckpt``, not hidden temporary files)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.glob("*.ckpt") if p.is_file())


def _check_identity(candidate: Candidate, expected: RunIdentity | None) -> None:
    found = candidate.identity
    if expected is None or found is None:
        return
    differs = found.method != expected.method or found.backbone != expected.backbone
    if found.dataset is not None and expected.dataset is not None:
        differs |= found.dataset != expected.dataset
    if differs:
        raise ResumeError(
            f"{candidate.path} is from a run of {found.describe()}, but this command asks for "
            f"{expected.describe()}: resume it with the same --method, --backbone and recipe, "
            "or choose another --output-dir."
        )


def resolve_resume(
    resume: str | None, output_dir: Path, expected: RunIdentity | None = None
) -> ResumeChoice:
    """The checkpoint to continue from.

    Args:
        resume: ``None`` (start fresh), ``"auto"`` (the most advanced valid checkpoint in
            ``output_dir``, or none) or a checkpoint path.
        output_dir: The run's output folder.
        expected: This run's identity; a checkpoint of another one is refused.

    Raises:
        ResumeError: If an explicit checkpoint is missing or invalid, or the chosen one belongs
            to another run.
    """
    if resume is None:
        return ResumeChoice(None, "")
    if resume != "auto":
        candidate = inspect_checkpoint(resume)
        if candidate.problem is not None:
            raise ResumeError(
                f"--resume {resume}: {candidate.problem}. Pass a valid .ckpt file, or "
                "--resume auto to take the most advanced valid checkpoint of --output-dir."
            )
        _check_identity(candidate, expected)
        return ResumeChoice(candidate, f"Resuming from {resume} ({candidate.where()}).")

    files = checkpoint_files(output_dir)
    if not files:
        return ResumeChoice(None, f"--resume auto: no checkpoint in {output_dir}, starting fresh.")
    # Cheap progress first (a few bytes per file), then full checks in that order; files that
    # cannot even be read are reported too, whatever their name or age.
    keys = {path: _quick_key(path) for path in files}
    skipped: list[str] = []
    for path in files:
        if keys[path] is None:
            skipped.append(f"{path.name}: {inspect_checkpoint(path).problem}")
    readable = {p: key for p, key in keys.items() if key is not None}
    order = sorted(readable, key=readable.__getitem__, reverse=True)
    chosen: Candidate | None = None
    for path in order:
        candidate = inspect_checkpoint(path)
        if candidate.problem is None:
            chosen = candidate
            break
        skipped.append(f"{path.name}: {candidate.problem}")
    skip_note = f" Skipped: {'; '.join(skipped)}." if skipped else ""
    if chosen is None:
        raise ResumeError(
            f"--resume auto: none of the {len(files)} checkpoints in {output_dir} can be resumed "
            f"from.{skip_note} Start a new run in another --output-dir (or without --resume "
            "after moving these files away)."
        )
    _check_identity(chosen, expected)
    others = len(files) - 1
    why = (
        f"the most training progress of the {len(files)} checkpoints there"
        if others
        else "the only checkpoint there"
    )
    message = f"Resuming from {chosen.path} ({chosen.where()}): {why}.{skip_note}"
    return ResumeChoice(chosen, message)


def _quick_key(path: Path) -> tuple[int, int, int] | None:
    progress = read_progress(path)
    if progress is None:
        return None
    rank = len(_PREFERRED) - _PREFERRED.index(path.name) if path.name in _PREFERRED else 0
    return (*progress, rank)


# Model settings that decide tensor shapes: named in the message when they differ.
_SHAPE_KEYS = ("backbone", "cifar_stem", "proj_hidden_dim", "proj_output_dim", "queue_size")


def check_compatible(
    candidate: Candidate, model: nn.Module, model_hparams: Mapping[str, Any]
) -> None:
    """Refuses a checkpoint whose tensors (and queues) do not fit the model this run built.

    Args:
        candidate: From :func:`inspect_checkpoint`.
        model: The new model.
        model_hparams: The new model's ``hparams["model"]``.

    Raises:
        ResumeError: Listing the missing, unexpected and differently shaped tensors, and the
            settings that differ.
    """
    model_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, MemoryBankModule):
            model_shapes[f"{name}.bank"] = tuple(module.bank.shape)
    saved_shapes = dict(candidate.shapes)
    rename = getattr(model, "rename_legacy_keys", None)
    if rename is not None:
        saved_shapes = rename(saved_shapes)
    missing, unexpected, reshaped = compare_state_dicts(model_shapes, saved_shapes)
    if not (missing or unexpected or reshaped):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label}: {', '.join(keys[:3])}{more}")
    saved = candidate.model_hparams
    settings = [
        f"model.{key} {saved.get(key)!r} in the checkpoint, {model_hparams.get(key)!r} now"
        for key in _SHAPE_KEYS
        if key in saved and saved.get(key) != model_hparams.get(key)
    ]
    hint = f" ({'; '.join(settings)})" if settings else ""
    raise ResumeError(
        f"{candidate.path} does not fit this run's model{hint}: {' | '.join(parts)}. Resume with "
        "the settings the run was started with (its config.yaml), or choose another --output-dir."
    )

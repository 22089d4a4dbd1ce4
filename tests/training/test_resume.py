"""Choosing the checkpoint to resume from, on small synthetic checkpoint files."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightly.models.modules.memory_bank import MemoryBankModule
from torch import nn

from lightly_amix.training import (
    ResumeError,
    RunIdentity,
    check_compatible,
    inspect_checkpoint,
    resolve_resume,
)
from lightly_amix.training.checkpoint_io import read_progress
from lightly_amix.training.resume import RUN_KEY, ResumeChoice, _first_sentence, identity_of

AMIX_I = RunIdentity("amix-i", "resnet18", "stl10")


def _save(path: Path, step: int, epoch: int, run: dict[str, Any] | None = None,
          hparams: dict[str, Any] | None = None, weight: float = 1.0) -> Path:  # fmt: skip
    ckpt: dict[str, Any] = {
        "global_step": step,
        "epoch": epoch,
        "state_dict": {"layer.weight": torch.full((2, 3), weight), "layer.bias": torch.zeros(2)},
        "hyper_parameters": hparams or {"model": {"backbone": "resnet18", "queue_size": 8}},
        "lightly_amix_memory_banks": {
            "bank": {"bank": torch.zeros(8, 4), "bank_ptr": torch.zeros(1)}
        },
    }
    if run is not None:
        ckpt[RUN_KEY] = run
    torch.save(ckpt, path)
    return path


RUN = {"method": "amix-i", "backbone": "resnet18", "dataset": "stl10"}


def test_auto_takes_the_most_progress_not_the_newest_file(tmp_path: Path) -> None:
    _save(tmp_path / "last.ckpt", 40, 3, RUN)
    _save(tmp_path / "epoch001.ckpt", 20, 1, RUN)
    time.sleep(0.01)
    _save(tmp_path / "interrupted.ckpt", 0, 0, RUN)  # newest, untrained
    os.utime(tmp_path / "interrupted.ckpt")
    choice = resolve_resume("auto", tmp_path, AMIX_I)
    assert choice.path == str(tmp_path / "last.ckpt")
    assert choice.message == (
        f"Resuming from {tmp_path / 'last.ckpt'} (step 40, epoch 3): the most training "
        "progress of the 3 checkpoints there."
    )


def test_equal_progress_prefers_last_then_interrupted(tmp_path: Path) -> None:
    _save(tmp_path / "epoch003.ckpt", 40, 3, RUN)
    _save(tmp_path / "interrupted.ckpt", 40, 3, RUN)
    assert resolve_resume("auto", tmp_path, AMIX_I).path == str(tmp_path / "interrupted.ckpt")
    _save(tmp_path / "last.ckpt", 40, 3, RUN)
    assert resolve_resume("auto", tmp_path, AMIX_I).path == str(tmp_path / "last.ckpt")


def test_no_checkpoint_starts_fresh_and_no_valid_one_is_an_error(tmp_path: Path) -> None:
    assert resolve_resume("auto", tmp_path, AMIX_I).candidate is None
    assert resolve_resume(None, tmp_path, AMIX_I).candidate is None
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 10)
    with pytest.raises(ResumeError, match=r"none of the 1 checkpoints .* last.ckpt: it cannot"):
        resolve_resume("auto", tmp_path, AMIX_I)


def test_another_method_backbone_or_dataset_is_refused_naming_both(tmp_path: Path) -> None:
    path = _save(tmp_path / "last.ckpt", 4, 0, RUN)
    for expected in (RunIdentity("mocov2", "resnet18", "stl10"),
                     RunIdentity("amix-i", "resnet50", "stl10"),
                     RunIdentity("amix-i", "resnet18", "tiny-imagenet")):  # fmt: skip
        with pytest.raises(ResumeError) as error:
            resolve_resume(str(path), tmp_path, expected)
        assert "is from a run of amix-i on resnet18 / stl10" in str(error.value)
        assert f"asks for {expected.describe()}" in str(error.value)


def test_checkpoints_of_older_versions_are_identified_by_their_hparams(tmp_path: Path) -> None:
    hparams = {
        "model": {"backbone": "resnet34"},
        "mix_block": {},
        "mixing": {"block_loss": "ce_pl+bce"},
    }
    candidate = inspect_checkpoint(_save(tmp_path / "old.ckpt", 4, 0, None, hparams))
    assert candidate.identity == RunIdentity("amix-c", "resnet34", None)
    # The data set is unknown: not held against the run.
    resolve_resume(str(tmp_path / "old.ckpt"), tmp_path, RunIdentity("amix-c", "resnet34", "x"))


def test_non_finite_weights_are_a_problem(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "nan.ckpt", 4, 0, RUN, weight=float("inf")))
    assert candidate.problem is not None
    assert candidate.problem.startswith("1 of 2 weight tensors hold NaN or inf (e.g. layer.weight)")


class Tiny(nn.Module):
    def __init__(self, queue: int = 8, width: int = 3) -> None:
        super().__init__()
        self.layer = nn.Linear(width, 2)
        self.bank = MemoryBankModule(size=(queue, 4))


def test_tensors_and_queues_must_fit_the_new_model(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    check_compatible(candidate, Tiny(), {"queue_size": 8})
    with pytest.raises(ResumeError, match=r"model.queue_size 8 in the checkpoint, 16 now\): shape:"
                       r" bank.bank: \(8, 4\) in the file, \(16, 4\) in the model"):  # fmt: skip
        check_compatible(candidate, Tiny(queue=16), {"queue_size": 16, "backbone": "resnet18"})
    with pytest.raises(ResumeError, match=r"shape: layer.weight: \(2, 3\) in the file, \(2, 5\)"):
        check_compatible(candidate, Tiny(width=5), {"queue_size": 8})


# --- what each message says, word for word (mutation testing found them unchecked) ----------


def test_a_fresh_start_and_an_explicit_path_say_what_they_chose(tmp_path: Path) -> None:
    assert resolve_resume(None, tmp_path) == ResumeChoice(None, "")
    path = _save(tmp_path / "epoch3.ckpt", 12, 3, RUN)
    choice = resolve_resume(str(path), tmp_path, AMIX_I)
    assert choice.candidate is not None and choice.path == str(path)
    assert choice.message == f"Resuming from {path} (step 12, epoch 3)."


def test_auto_names_the_checkpoint_its_progress_and_what_it_skipped(tmp_path: Path) -> None:
    older = _save(tmp_path / "epoch1.ckpt", 4, 1, RUN)
    newest = _save(tmp_path / "epoch2.ckpt", 8, 2, RUN)
    (tmp_path / "torn.ckpt").write_bytes(newest.read_bytes()[:100])
    choice = resolve_resume("auto", tmp_path, AMIX_I)
    assert choice.path == str(newest)
    assert choice.message == (
        f"Resuming from {newest} (step 8, epoch 2): the most training progress of the 3 "
        "checkpoints there. Skipped: torn.ckpt: it cannot be read: 100 bytes, truncated, empty "
        "or not a checkpoint (PytorchStreamReader failed reading zip archive: failed finding "
        "central directory)."
    )
    newest.unlink()
    (tmp_path / "torn.ckpt").unlink()
    only = resolve_resume("auto", tmp_path, AMIX_I)
    assert only.message == f"Resuming from {older} (step 4, epoch 1): the only checkpoint there."


def test_auto_ranks_by_progress_not_by_name(tmp_path: Path) -> None:
    # Sorted by name, "b.ckpt" (step 2) would come first.
    _save(tmp_path / "b.ckpt", 2, 0, RUN)
    best = _save(tmp_path / "a.ckpt", 9, 1, RUN)
    assert resolve_resume("auto", tmp_path, AMIX_I).path == str(best)


def test_the_errors_say_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(ResumeError) as explicit:
        resolve_resume(str(missing), tmp_path)
    assert str(explicit.value) == (
        f"--resume {missing}: it does not exist. Pass a valid .ckpt file, or --resume auto to "
        "take the most advanced valid checkpoint of --output-dir."
    )
    (tmp_path / "last.ckpt").write_bytes(b"")
    with pytest.raises(ResumeError) as auto:
        resolve_resume("auto", tmp_path)
    assert str(auto.value) == (
        f"--resume auto: none of the 1 checkpoints in {tmp_path} can be resumed from. Skipped: "
        "last.ckpt: it cannot be read: 0 bytes, truncated, empty or not a checkpoint "
        "(EOFError). Start a new run in another --output-dir (or without --resume after moving "
        "these files away)."
    )


def test_auto_refuses_another_runs_checkpoint_and_names_an_unrecorded_data_set(
    tmp_path: Path,
) -> None:
    path = _save(tmp_path / "last.ckpt", 4, 0, {**RUN, "dataset": None})
    with pytest.raises(ResumeError) as refused:
        resolve_resume("auto", tmp_path, RunIdentity("amix-c", "resnet18", "stl10"))
    assert str(refused.value) == (
        f"{path} is from a run of amix-i on resnet18 / an unrecorded data set, but this command "
        "asks for amix-c on resnet18 / stl10: resume it with the same --method, --backbone and "
        "recipe, or choose another --output-dir."
    )
    # Without an identity to compare with (or none recorded), any checkpoint is taken.
    assert resolve_resume("auto", tmp_path).path == str(path)


NOT_OURS = "it is not a pre-training checkpoint of lightly_amix (no state_dict / global_step)"


@pytest.mark.parametrize(
    "content",
    [[1, 2], {"global_step": 1, "state_dict": {}, "hyper_parameters": {}}],  # a list; no epoch
)
def test_files_that_are_not_pre_training_checkpoints(content: object, tmp_path: Path) -> None:
    torch.save(content, tmp_path / "x.ckpt")
    assert inspect_checkpoint(tmp_path / "x.ckpt").problem == NOT_OURS


class _Pickled:
    """Not a tensor: ``weights_only`` loading must refuse to run its pickle."""


def test_a_file_that_would_run_code_on_load_is_not_read(tmp_path: Path) -> None:
    ckpt = {"global_step": 1, "epoch": 0, "state_dict": {}, "hyper_parameters": {},
            "payload": _Pickled()}  # fmt: skip
    torch.save(ckpt, tmp_path / "x.ckpt")
    problem = inspect_checkpoint(tmp_path / "x.ckpt").problem
    assert problem is not None and problem.startswith("it cannot be read: ")
    assert "Weights only load failed" in problem


def test_the_older_file_format_is_read_whole(tmp_path: Path) -> None:
    # Checkpoints of torch < 1.6 cannot be memory-mapped.
    ckpt = {"global_step": 3, "epoch": 1, "state_dict": {"w": torch.ones(2)},
            "hyper_parameters": {"optim": {}}}  # fmt: skip
    torch.save(ckpt, tmp_path / "last.ckpt", _use_new_zipfile_serialization=False)
    candidate = inspect_checkpoint(tmp_path / "last.ckpt")
    assert candidate.problem is None and (candidate.step, candidate.epoch) == (3, 1)
    # No model settings and no run record: defaults, not an error.
    assert candidate.model_hparams == {}
    assert candidate.identity == RunIdentity("mocov2", "?", None)
    assert read_progress(tmp_path / "last.ckpt") == (3, 1)
    assert resolve_resume("auto", tmp_path).path == str(tmp_path / "last.ckpt")


def test_identity_without_hyper_parameters() -> None:
    assert identity_of({}) == RunIdentity("mocov2", "?", None)
    assert identity_of({"hyper_parameters": {"model": {}}}).backbone == "?"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ValueError(""), "ValueError"),
        (KeyError(101), "KeyError: 101"),
        (RuntimeError("First part. Second part.\nmore"), "First part"),
        (RuntimeError("ends with a dot."), "ends with a dot"),
        (RuntimeError("x " * 60), ("x " * 60).strip()),  # 119 characters: kept whole
        (RuntimeError("z " * 59 + "zX"), "z " * 59 + "zX"),  # 120: kept whole, X and all
        (RuntimeError("y " * 61), ("y " * 61)[:117] + "..."),  # 121: cut to 120
    ],
)
def test_first_sentence_of_an_error(exc: BaseException, expected: str) -> None:
    assert _first_sentence(exc) == expected
    assert len(_first_sentence(exc)) <= 120


def test_the_shape_error_lists_three_names_per_kind_and_counts_the_rest(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    candidate.shapes = {f"old{i}": (1,) for i in range(5)} | {"layer.weight": (2, 3)}
    with pytest.raises(ResumeError) as error:
        check_compatible(candidate, Tiny(), {"queue_size": 8, "backbone": "resnet50"})
    assert str(error.value) == (
        f"{tmp_path / 'last.ckpt'} does not fit this run's model (model.backbone 'resnet18' in "
        "the checkpoint, 'resnet50' now): missing: layer.bias, bank.bank | unexpected: old0, "
        "old1, old2 and 2 more. Resume with the settings the run was started with (its "
        "config.yaml), or choose another --output-dir."
    )


class Renamed(Tiny):
    """A model whose checkpoints of an older version named ``layer`` ``old_layer``."""

    def rename_legacy_keys(self, shapes: dict[str, Any]) -> dict[str, Any]:
        return {k.replace("old_layer.", "layer."): v for k, v in shapes.items()}


def test_legacy_key_names_are_renamed_before_the_comparison(tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    candidate.shapes = {k.replace("layer.", "old_layer."): v for k, v in candidate.shapes.items()}
    check_compatible(candidate, Renamed(), {"queue_size": 8})  # no error
    with pytest.raises(ResumeError) as error:
        check_compatible(candidate, Tiny(), {"queue_size": 8})
    assert "missing: layer.weight, layer.bias | unexpected: old_layer.weight" in str(error.value)


def test_auto_in_an_empty_folder_says_it_starts_fresh(tmp_path: Path) -> None:
    choice = resolve_resume("auto", tmp_path)
    assert choice == ResumeChoice(
        None, f"--resume auto: no checkpoint in {tmp_path}, starting fresh."
    )


def test_auto_skips_diverged_checkpoints_and_lists_each(tmp_path: Path) -> None:
    good = _save(tmp_path / "epoch1.ckpt", 4, 1, RUN)
    _save(tmp_path / "epoch3.ckpt", 12, 3, RUN, weight=float("nan"))
    _save(tmp_path / "last.ckpt", 16, 4, RUN, weight=float("inf"))
    choice = resolve_resume("auto", tmp_path)
    assert choice.path == str(good)
    diverged = ("1 of 2 weight tensors hold NaN or inf (e.g. layer.weight) (training had "
                "diverged when it was written)")  # fmt: skip
    assert choice.message.endswith(
        f"the most training progress of the 3 checkpoints there. Skipped: last.ckpt: {diverged}; "
        f"epoch3.ckpt: {diverged}."
    )


@pytest.mark.parametrize(
    ("extra", "listed"),
    [(3, "old0, old1, old2"), (4, "old0, old1, old2 and 1 more")],
)
def test_only_three_names_per_kind(extra: int, listed: str, tmp_path: Path) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    candidate.shapes |= {f"old{i}": (1,) for i in range(extra)}
    with pytest.raises(ResumeError) as error:
        check_compatible(candidate, Tiny(), {"queue_size": 8, "backbone": "resnet18"})
    # No model setting differs: no hint in parentheses.
    assert str(error.value) == (
        f"{tmp_path / 'last.ckpt'} does not fit this run's model: unexpected: {listed}. Resume "
        "with the settings the run was started with (its config.yaml), or choose another "
        "--output-dir."
    )


def test_missing_tensors_alone_are_refused_and_every_differing_setting_is_named(
    tmp_path: Path,
) -> None:
    candidate = inspect_checkpoint(_save(tmp_path / "last.ckpt", 4, 0, RUN))
    del candidate.shapes["layer.bias"]
    with pytest.raises(ResumeError) as error:
        check_compatible(candidate, Tiny(), {"queue_size": 16, "backbone": "resnet50"})
    assert (
        "(model.backbone 'resnet18' in the checkpoint, 'resnet50' now; model.queue_size 8 in the "
        "checkpoint, 16 now): missing: layer.bias." in str(error.value)
    )

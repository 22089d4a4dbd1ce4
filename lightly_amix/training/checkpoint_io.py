"""Checkpoint files that cannot be torn, truncated or silently replaced by a worse one.

Lightning writes a checkpoint to a temporary file in the system's temp folder and moves it into
place; when the output folder is on another file system the move is a copy, so a kill or a full
disk during it leaves a torn ``last.ckpt``. :class:`SafeCheckpointIO` (a Lightning
``CheckpointIO`` plugin) instead:

1. refuses a checkpoint whose weights or optimiser state are not finite (it would overwrite a
   good file with one that cannot train),
2. writes to a temporary file *in the output folder* (``.<name>.<pid>.tmp``), flushes and
   ``fsync``-s it, and renames it over the target (atomic on POSIX file systems), then
   ``fsync``-s the folder, so the target is always either the old or the new complete file,
3. never replaces a readable checkpoint that holds *more* training progress (a run resumed on
   purpose from an earlier checkpoint): that file is first renamed to ``<name>-step<N>.ckpt``,
4. on a write error (disk full, read-only, ...) removes its temporary file and raises
   :class:`CheckpointWriteError`, which says that the previous file is unchanged.

Temporary files orphaned by a ``kill -9`` during a save are removed by
:func:`remove_stale_temporary_files` at the next start.

Examples:
    >>> trainer = pl.Trainer(plugins=[SafeCheckpointIO()])  # doctest: +SKIP
    >>> atomic_save({"weights": torch.zeros(3)}, "out/backbone.pt")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch import Tensor

# Where MomentumContrastMethod stores its queues (lightly_amix.models.base).
MEMORY_BANKS_KEY = "lightly_amix_memory_banks"
_TEMP_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the file it was to replace is unchanged."""


class NonFiniteCheckpointError(CheckpointWriteError):
    """A checkpoint was refused because its weights or optimiser state hold NaN or inf."""


# ----------------------------------------------------------------------------- finiteness
def _float_tensors(value: Any) -> Iterator[Tensor]:
    """Every floating-point tensor inside nested dicts, lists and tuples."""
    if isinstance(value, Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _float_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _float_tensors(item)


def non_finite_summary(checkpoint: Mapping[str, Any]) -> str | None:
    """Where a checkpoint's training state is not finite, in words; ``None`` if it all is.

    Looks at the model weights and buffers (``state_dict``), the optimiser state (e.g. SGD
    momentum) and the memory banks.

    Examples:
        >>> non_finite_summary({"state_dict": {"w": torch.tensor([1.0, float("nan")])}})
        '1 of 1 weight tensors hold NaN or inf (e.g. w)'
    """
    state = checkpoint.get("state_dict", {})
    bad = [name for name, value in state.items() if _is_non_finite(value)]
    if bad:
        examples = ", ".join(bad[:3])
        return f"{len(bad)} of {len(state)} weight tensors hold NaN or inf (e.g. {examples})"
    for key, what in (("optimizer_states", "optimiser state"), (MEMORY_BANKS_KEY, "queue")):
        if any(not bool(t.isfinite().all()) for t in _float_tensors(checkpoint.get(key))):
            return f"its {what} holds NaN or inf"
    return None


def _is_non_finite(value: Any) -> bool:
    return (
        isinstance(value, Tensor) and value.is_floating_point() and not bool(value.isfinite().all())
    )


# ----------------------------------------------------------------------------- atomic writes
def temporary_path(path: Path) -> Path:
    """The temporary file a save of ``path`` writes first: ``.<name>.<pid>.tmp`` beside it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_file(obj: Any, path: Path) -> None:
    """Serialises ``obj`` with ``torch.save`` into ``path`` and forces it to the disk.

    A module-level function so that the fault-injection tests can replace it with a writer
    that fails part-way (a full disk).
    """
    with open(path, "wb") as file:
        torch.save(obj, file)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk (not possible everywhere).
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` that leaves ``path`` either unchanged or complete, never torn.

    Args:
        obj: Anything ``torch.save`` accepts.
        path: Target file; its folder must exist.

    Raises:
        CheckpointWriteError: If writing fails (the message names the cause); ``path`` is
            unchanged and no temporary file is left behind.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        _write_file(obj, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise CheckpointWriteError(_write_error(path, exc)) from exc
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes a small text file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CheckpointWriteError(_write_error(path, exc)) from exc


def _write_error(path: Path, exc: OSError) -> str:
    kept = "is unchanged" if path.exists() else "was not created"
    hint = {
        errno.ENOSPC: "free space on that file system",
        errno.EDQUOT: "free space within your disk quota",
        errno.EROFS: "the file system is read-only; choose another --output-dir",
        errno.EACCES: "check the folder's permissions or choose another --output-dir",
    }.get(exc.errno or 0, "check the output folder")
    return (
        f"could not write {path} ({exc.strerror or exc}); {path.name} {kept}. "
        f"To fix it, {hint}, then continue with --resume auto."
    )


# ----------------------------------------------------------------------------- progress
def load_tensors_only(path: Path) -> Any:
    """``torch.load`` of tensors and plain containers only (``weights_only``), on the CPU.

    Memory-maps files of the zip format (torch >= 1.6), so that reading a few numbers of a
    large checkpoint reads only their bytes; a file of the older format is read whole.

    Raises:
        Exception: What torch raised for the file (several types for torn or foreign files).
    """
    with open(path, "rb") as f:
        zip_format = f.read(4) == b"PK\x03\x04"  # a zip file's local header signature
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zip_format)


def read_progress(path: Path) -> tuple[int, int] | None:
    """``(global_step, epoch)`` of a checkpoint file, or ``None`` if it cannot be read.

    Memory-maps the file, so only the few bytes of the two numbers are read.
    """
    try:
        ckpt = load_tensors_only(path)
    except Exception:  # any unreadable file: torch raises several types
        return None
    if not isinstance(ckpt, dict) or "global_step" not in ckpt:
        return None
    return int(ckpt["global_step"]), int(ckpt.get("epoch", -1))


def _keep_name(path: Path, step: int) -> Path:
    candidate = path.with_name(f"{path.stem}-step{step}{path.suffix}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-step{step}-{n}{path.suffix}")
    return candidate


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with validated, atomic, progress-preserving saves.

    Pass it to the Trainer as ``plugins=[SafeCheckpointIO()]``. See the module docstring for
    the guarantees. Loading is Lightning's.

    Args:
        log: Called with one line when a more advanced checkpoint is kept under a new name.
    """

    def __init__(self, log: Any = print) -> None:
        super().__init__()
        self.log = log
        # Targets written by this process, with the progress written: they need no re-check.
        self._written: dict[Path, tuple[int, int]] = {}

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        path = Path(path)
        problem = non_finite_summary(checkpoint)
        if problem is not None:
            raise NonFiniteCheckpointError(
                f"refusing to write {path} at step {checkpoint.get('global_step')}: {problem}. "
                f"{path.name} is unchanged. Training has diverged: use --precision 32-true or "
                "a lower optim.base_lr, and resume from the last valid checkpoint or start again."
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        progress = (int(checkpoint.get("global_step", 0)), int(checkpoint.get("epoch", -1)))
        if path not in self._written and path.is_file():
            existing = read_progress(path)
            if existing is not None and existing > progress:
                kept = _keep_name(path, existing[0])
                os.replace(path, kept)
                self.log(
                    f"Kept {path.name} of step {existing[0]} as {kept.name}: it holds more "
                    f"training than the step-{progress[0]} state that replaces it."
                )
        atomic_save(checkpoint, path)
        self._written[path] = progress


def remove_stale_temporary_files(folder: Path, log: Any = print) -> list[Path]:
    """Removes temporary files of saves that a killed process never finished.

    Only files named like :func:`temporary_path` whose process is gone are removed.

    Returns:
        The removed files.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMP_PATTERN.match(path.name)
        if match is None or not path.is_file():
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _process_alive(pid):
            continue
        size = path.stat().st_size
        with contextlib.suppress(OSError):
            path.unlink()
            removed.append(path)
            log(
                f"Removed {path.name} ({size / 2**20:.1f} MiB): a partial save of "
                f"{match['name']} left by an interrupted process."
            )
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # pragma: no mutate  (a mutated signal would hit a live process)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

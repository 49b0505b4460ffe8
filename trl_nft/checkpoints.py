"""Checkpoints that become visible only when complete, and picking the newest complete one to resume from.

transformers writes ``checkpoint-N/`` in place (weights, optimizer, scaler, RNG, trainer state) and, with several
processes or DeepSpeed ZeRO-3, every rank writes its own files into that same folder. A job killed while saving
leaves a folder that looks like a checkpoint but cannot be resumed. `NFTTrainer` therefore keeps one small status
file per checkpoint, ``nft_checkpoint.json``:

* the main process writes it with ``"status": "saving"`` before anything else of that checkpoint is written;
* once every rank has written all of its files (a barrier), the main process rewrites it, atomically, with
  ``"status": "complete"``.

A marker rather than write-to-a-temporary-folder-and-rename: transformers and DeepSpeed choose the folder every rank
writes into, ranks on different nodes would all have to write under the temporary name, and a rename of a folder
that other nodes still see through a network filesystem's cache is not reliably atomic. A marker written last by one
process, after a barrier, needs none of that.

Folders without the file were written before this scheme (or by another trainer): they count as complete when they
have transformers' trainer state (written last by transformers) and model weights.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

STATUS_FILE = "nft_checkpoint.json"
SAVING, COMPLETE = "saving", "complete"
AUTO = "auto"
TRAINER_STATE_FILE = "trainer_state.json"
# Any of these makes a folder without a status file hold model weights (full, sharded, adapter, DeepSpeed, FSDP).
_WEIGHT_NAMES = re.compile(
    r"^(model\.safetensors|pytorch_model\.bin|model\.safetensors\.index\.json|pytorch_model\.bin\.index\.json|"
    r"adapter_model\.(safetensors|bin)|global_step\d+|pytorch_model_fsdp.*)$"
)
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def status_path(folder: str) -> str:
    return os.path.join(folder, STATUS_FILE)


def _write_status(folder: str, status: str, step: int, world_size: int) -> None:
    """Replace the status file atomically (write a temporary file, flush it to disk, rename)."""
    path = status_path(folder)
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump({"status": status, "step": step, "world_size": world_size}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def mark_saving(folder: str, step: int, world_size: int) -> None:
    """Main process, before any file of the checkpoint is written: the folder is not resumable until marked complete."""
    os.makedirs(folder, exist_ok=True)
    _write_status(folder, SAVING, step, world_size)


def mark_complete(folder: str, step: int, world_size: int) -> None:
    """Main process, after every rank has written its files: flush them to disk, then declare the folder complete."""
    _flush_folder(folder)
    _write_status(folder, COMPLETE, step, world_size)
    _fsync_directory(folder)


def _flush_folder(folder: str) -> None:
    """fsync every file of the checkpoint, so a node crash after the marker cannot leave it pointing at lost data."""
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:  # vanished meanwhile (a temporary file renamed by its writer)
                continue
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _fsync_directory(root)


def _fsync_directory(folder: str) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems refuse fsync on directories; the files themselves are flushed
        pass
    finally:
        os.close(descriptor)


def is_complete(folder: str) -> bool:
    """Whether `folder` can be resumed from: marked complete, or (no status file) an older, finished checkpoint."""
    path = status_path(folder)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle).get("status") == COMPLETE
        except (OSError, ValueError):
            return False
    return _is_finished_without_status(folder)


def _is_finished_without_status(folder: str) -> bool:
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    return TRAINER_STATE_FILE in names and any(_WEIGHT_NAMES.match(name) for name in names)


def checkpoint_folders(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every ``checkpoint-N`` folder in `output_dir`, oldest step first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_NAME.match(name)
        path = os.path.join(output_dir, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return sorted(found)


def newest_complete_checkpoint(output_dir: str) -> str | None:
    """The highest-step complete checkpoint in `output_dir` (None if there is none); warns about newer incomplete
    folders it skips, by name."""
    skipped = []
    for _, path in reversed(checkpoint_folders(output_dir)):
        if is_complete(path):
            _warn_skipped(skipped, path)
            return path
        skipped.append(path)
    _warn_skipped(skipped, None)
    return None


def _warn_skipped(skipped: list[str], chosen: str | None) -> None:
    if skipped:
        logger.warning(
            "Ignoring incomplete checkpoint folder(s) %s (a save was interrupted); resuming from %s.",
            ", ".join(skipped), chosen or "scratch",
        )


def resolve_resume(resume_from_checkpoint, output_dir: str):
    """Turn `train(resume_from_checkpoint=...)` into a folder or None.

    * ``True``: the newest complete checkpoint in `output_dir`; an error if there is none (as transformers).
    * ``"auto"``: the newest complete checkpoint, or None (a fresh start); logged either way.
    * a path: used as given, unless it is an incomplete checkpoint (an error naming it).
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.strip().lower() == AUTO:
        found = newest_complete_checkpoint(output_dir)
        if found is None:
            logger.warning("resume_from_checkpoint='auto': no complete checkpoint in %s, starting a fresh run.",
                           output_dir)
        else:
            logger.warning("resume_from_checkpoint='auto': resuming from %s.", found)
        return found
    if resume_from_checkpoint is True:
        found = newest_complete_checkpoint(output_dir)
        if found is None:
            raise ValueError(
                f"resume_from_checkpoint=True: no complete checkpoint in output_dir {output_dir!r}; "
                "use resume_from_checkpoint='auto' to start a fresh run when there is none"
            )
        logger.info("Resuming from %s.", found)
        return found
    folder = os.fspath(resume_from_checkpoint)
    if os.path.isdir(folder) and not is_complete(folder):
        raise ValueError(
            f"resume_from_checkpoint={folder!r} is an incomplete checkpoint (its save was interrupted); resume from "
            "an earlier one, or pass 'auto' for the newest complete checkpoint"
        )
    return folder


def rotate(output_dir: str, save_total_limit: int | None, keep: tuple[str | None, ...] = ()) -> list[str]:
    """Apply `save_total_limit` to complete checkpoints only, and drop incomplete folders older than the newest
    complete one (interrupted saves that can never be resumed). Never deletes the newest complete checkpoint, nor
    any path in `keep` (e.g. the best model's). Returns the folders deleted."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    folders = checkpoint_folders(output_dir)
    complete = [path for _, path in folders if is_complete(path)]
    if not complete:
        return []
    protected = {os.path.abspath(path) for path in keep if path} | {os.path.abspath(complete[-1])}
    newest_complete_step = next(step for step, path in folders if path == complete[-1])
    stale = [path for step, path in folders if step < newest_complete_step and path not in complete]
    surplus = len(complete) - max(save_total_limit, 1)
    doomed = stale + [path for path in complete[:-1] if os.path.abspath(path) not in protected][:max(surplus, 0)]
    for path in doomed:
        if os.path.abspath(path) not in protected:
            shutil.rmtree(path, ignore_errors=True)
    return doomed


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# torch.save's zip writer reports a short write on a full disk as a RuntimeError without an errno ("unexpected pos"):
# such an error counts as disk full when the checkpoint's filesystem has less than this left.
LOW_SPACE_BYTES = 1 << 20


def is_disk_full(error: BaseException, folder: str) -> bool:
    """Whether `error`, raised while writing checkpoint `folder`, comes from a full disk (or an exhausted quota)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    if not isinstance(error, (OSError, RuntimeError)):
        return False
    try:
        stats = os.statvfs(folder if os.path.isdir(folder) else os.path.dirname(folder))
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < LOW_SPACE_BYTES


def disk_full_error(error: BaseException, folder: str, output_dir: str) -> OSError:
    """The error raised when a checkpoint cannot be written for lack of space: names the folder and what to resume."""
    previous = newest_complete_checkpoint(output_dir)
    fallback = f"the newest complete checkpoint, {previous}, is untouched" if previous else "there is no complete one"
    filename = getattr(error, "filename", None) or folder
    return OSError(
        errno.ENOSPC,
        f"No space left on the device while writing checkpoint {folder} ({filename}: {error}). That folder stays "
        f"marked incomplete and resume ignores it; {fallback}. Free space (or lower save_total_limit) and resume "
        "with resume_from_checkpoint='auto'.",
        filename,
    )

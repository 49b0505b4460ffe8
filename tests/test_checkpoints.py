"""Checkpoints count only once complete: resume skips interrupted saves, rotation keeps the newest complete one,
a full disk names the folder and leaves the previous checkpoint usable. In-process, seconds each; the SIGKILL matrix
is in tests/test_preemption.py."""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import Trainer

from tests.conftest import REPO_ROOT, first_char_parity_reward, tiny_args
from trl_nft import NFTConfig, NFTTrainer, checkpoints


def make_trainer(base_model, tokenizer, prompt_dataset, output_dir, **overrides):
    settings = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, **overrides}
    args = tiny_args(NFTConfig, output_dir, **settings)
    return NFTTrainer(model=copy.deepcopy(base_model), reward_funcs=first_char_parity_reward, args=args,
                      train_dataset=prompt_dataset, processing_class=tokenizer)


def folder_names(output_dir):
    return [path.rsplit("/", 1)[-1] for _, path in checkpoints.checkpoint_folders(str(output_dir))]


class Interrupted(Exception):
    """Stands in for the process dying inside a save (the SIGKILL version is tests/test_preemption.py)."""


def interrupt_save_at_step(monkeypatch, step, method):
    original = getattr(Trainer, method)

    def failing(self, output_dir):
        original(self, output_dir)
        if output_dir.endswith(f"checkpoint-{step}"):
            raise Interrupted(output_dir)

    monkeypatch.setattr(Trainer, method, failing)


# ----------------------------------------------------------------------------------------------- the markers
def test_marker_is_written_last_and_complete(base_model, tokenizer, prompt_dataset, tmp_path):
    make_trainer(base_model, tokenizer, prompt_dataset, tmp_path).train()
    for name in ("checkpoint-2", "checkpoint-4"):
        status = json.loads((tmp_path / name / checkpoints.STATUS_FILE).read_text())
        assert status == {"status": "complete", "step": int(name.split("-")[1]), "world_size": 1}
        assert checkpoints.is_complete(str(tmp_path / name))
    assert not list(tmp_path.glob("checkpoint-*/*.tmp"))


def test_folder_states(tmp_path):
    saving = tmp_path / "checkpoint-3"
    checkpoints.mark_saving(str(saving), 3, 2)
    (saving / "trainer_state.json").write_text("{}")
    (saving / "model.safetensors").write_text("")
    assert not checkpoints.is_complete(str(saving))  # trainer state written, other ranks maybe not: not yet
    checkpoints.mark_complete(str(saving), 3, 2)
    assert checkpoints.is_complete(str(saving))
    older = tmp_path / "checkpoint-1"  # written before the marker existed
    older.mkdir()
    (older / "model.safetensors").write_text("")
    assert not checkpoints.is_complete(str(older))  # weights only: killed before the trainer state
    (older / "trainer_state.json").write_text("{}")
    assert checkpoints.is_complete(str(older))
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "not-a-checkpoint-9").mkdir()
    assert folder_names(tmp_path) == ["checkpoint-1", "checkpoint-3"]


def test_rotation_counts_complete_checkpoints_only(tmp_path):
    for step in (1, 2, 3, 4, 5):
        checkpoints.mark_saving(str(tmp_path / f"checkpoint-{step}"), step, 1)
    for step in (1, 3, 4):
        checkpoints.mark_complete(str(tmp_path / f"checkpoint-{step}"), step, 1)
    deleted = checkpoints.rotate(str(tmp_path), 1, keep=(str(tmp_path / "checkpoint-1"),))
    assert sorted(deleted) == sorted(str(tmp_path / f"checkpoint-{step}") for step in (2, 3))
    # the best (kept) and newest complete survive; checkpoint-5 (newer, being written) is left alone
    assert folder_names(tmp_path) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]
    assert checkpoints.rotate(str(tmp_path), None) == []


# -------------------------------------------------------------------------------------------- interrupted saves
def test_resume_true_skips_an_interrupted_save_with_a_warning(base_model, tokenizer, prompt_dataset, tmp_path,
                                                             monkeypatch, caplog):
    full = make_trainer(base_model, tokenizer, prompt_dataset, tmp_path / "full")
    full.train()
    interrupt_save_at_step(monkeypatch, 4, method="_save_optimizer_and_scheduler")
    with pytest.raises(Interrupted):
        make_trainer(base_model, tokenizer, prompt_dataset, tmp_path / "run").train()
    monkeypatch.undo()
    partial = tmp_path / "run" / "checkpoint-4"
    assert (partial / "model.safetensors").exists() and not checkpoints.is_complete(str(partial))
    resumed = make_trainer(base_model, tokenizer, prompt_dataset, tmp_path / "run")
    with caplog.at_level(logging.WARNING, logger="trl_nft.checkpoints"):
        resumed.train(resume_from_checkpoint=True)
    assert f"Ignoring incomplete checkpoint folder(s) {partial}" in caplog.text
    assert str(tmp_path / "run" / "checkpoint-2") in caplog.text
    assert checkpoints.is_complete(str(partial))  # saved again, completely, by the resumed run
    for name, parameter in full.model.named_parameters():
        torch.testing.assert_close(dict(resumed.model.named_parameters())[name], parameter, rtol=0, atol=1e-6)
    checkpoints.mark_saving(str(partial), 4, 1)  # an explicit path to an incomplete folder is refused by name
    with pytest.raises(ValueError, match="checkpoint-4.* is an incomplete checkpoint"):
        checkpoints.resolve_resume(str(partial), str(tmp_path / "run"))


def test_save_total_limit_keeps_the_previous_checkpoint_until_the_new_one_is_complete(
        base_model, tokenizer, prompt_dataset, tmp_path, monkeypatch):
    mark_complete = checkpoints.mark_complete

    def interrupted_before_the_marker(folder, *args):  # every file written, the marker not yet
        if folder.endswith("checkpoint-4"):
            raise Interrupted(folder)
        mark_complete(folder, *args)

    monkeypatch.setattr(checkpoints, "mark_complete", interrupted_before_the_marker)
    with pytest.raises(Interrupted):
        make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, save_total_limit=1).train()
    assert folder_names(tmp_path) == ["checkpoint-2", "checkpoint-4"]
    assert checkpoints.newest_complete_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-2")
    monkeypatch.undo()
    make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, save_total_limit=1).train(
        resume_from_checkpoint="auto")
    assert folder_names(tmp_path) == ["checkpoint-4"]


def test_auto_starts_fresh_without_checkpoints_and_true_explains(base_model, tokenizer, prompt_dataset, tmp_path,
                                                                  caplog):
    trainer = make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, max_steps=2)
    with pytest.raises(ValueError, match="no complete checkpoint in output_dir"):
        trainer.train(resume_from_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="trl_nft.checkpoints"):
        trainer.train(resume_from_checkpoint="auto")
    assert "no complete checkpoint" in caplog.text and "starting a fresh run" in caplog.text
    assert trainer.state.global_step == 2


def test_checkpoint_written_before_markers_still_resumes(base_model, tokenizer, prompt_dataset, tmp_path, caplog):
    make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, max_steps=2).train()
    (tmp_path / "checkpoint-2" / checkpoints.STATUS_FILE).unlink()
    trainer = make_trainer(base_model, tokenizer, prompt_dataset, tmp_path)
    with caplog.at_level(logging.WARNING, logger="trl_nft.checkpoints"):
        trainer.train(resume_from_checkpoint="auto")
    assert f"resuming from {tmp_path / 'checkpoint-2'}" in caplog.text
    assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------- disk full
def test_disk_full_names_the_folder_and_keeps_the_previous_checkpoint(base_model, tokenizer, prompt_dataset,
                                                                      tmp_path, monkeypatch):
    original_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return original_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left") as raised:
        make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, save_total_limit=1).train()
    message = str(raised.value)
    assert raised.value.errno == errno.ENOSPC
    assert f"writing checkpoint {tmp_path / 'checkpoint-4'}" in message
    assert f"the newest complete checkpoint, {tmp_path / 'checkpoint-2'}, is untouched" in message
    monkeypatch.undo()
    assert not checkpoints.is_complete(str(tmp_path / "checkpoint-4"))
    trainer = make_trainer(base_model, tokenizer, prompt_dataset, tmp_path, save_total_limit=1)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 4 and folder_names(tmp_path) == ["checkpoint-4"]


def can_mount_a_private_tmpfs(folder) -> bool:
    probe = f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(folder))}"
    return subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_really_full_filesystem(tmp_path):
    """A real 600 KB tmpfs (one tiny checkpoint fits, not two), mounted in a private mount namespace that dies with
    the subprocess: torch reports the short write as a RuntimeError, the trainer as disk full; after the space grows,
    `auto` resumes from the checkpoint that was kept. About 30-60 s; skipped where mounting is not permitted."""
    mount_point = tmp_path / "small_disk"
    mount_point.mkdir()
    if shutil.which("unshare") is None or not can_mount_a_private_tmpfs(mount_point):
        pytest.skip("needs `unshare -m` and mount permission (root in a private mount namespace)")
    probe = [sys.executable, str(REPO_ROOT / "tests" / "scripts" / "disk_full_probe.py"), str(mount_point / "run"),
             "2"]
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    script = " && ".join([
        f"mount -t tmpfs -o size=600k tmpfs {shlex.quote(str(mount_point))}",
        f"{shlex.join(probe)} > {shlex.quote(str(first))}",
        f"mount -o remount,size=4m {shlex.quote(str(mount_point))}",  # space freed
        f"{shlex.join([*probe, 'auto'])} > {shlex.quote(str(second))}",
    ])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    full, resumed = (json.loads(path.read_text().strip().splitlines()[-1]) for path in (first, second))
    assert full["error"]["type"] == "OSError" and full["error"]["errno"] == errno.ENOSPC
    assert f"writing checkpoint {mount_point / 'run' / 'checkpoint-2'}" in full["error"]["message"]
    assert f"newest complete checkpoint, {mount_point / 'run' / 'checkpoint-1'}, is untouched" in \
        full["error"]["message"]
    assert full["complete"] == {"checkpoint-1": True, "checkpoint-2": False}
    assert resumed["error"] is None and resumed["global_step"] == 2
    assert resumed["complete"] == {"checkpoint-2": True}
    assert str(mount_point) not in subprocess.run(["mount"], capture_output=True, text=True).stdout  # none left

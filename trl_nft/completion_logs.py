"""NFT's columns in TRL's completions table (`log_completions=True`): r, r̂ and r − r̂ instead of GRPO's advantage.

TRL's `GRPOTrainer` keeps the latest generation batch's prompts, completions, rewards and normalised advantages in
`trainer._logs` (deques sized to the generation batch), prints a sample with rich and writes
`completions/completions_<step>.parquet` (plus a wandb / trackio table). NFT does not use the normalised advantage,
so each logged round gets:

- the `advantage` column overwritten with NFT's on-policy advantage r − r̂ (TRL names that column itself);
- two extra columns, `r` (the completion's correctness label) and `r_hat` (its group's correct rate).

Completions whose rewards were all `None` are unscorable: their `r` and `r − r̂` are NaN.

With dynamic sampling several rounds are generated per batch and most of their groups are discarded. `LogRound`
collects one round's rows apart from TRL's bounded deques (a refill round is larger than the generation batch, so
writing it there would push out rows already kept) and, on leaving the `with` block, moves only the rows marked with
`keep` into the table.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from trl_nft.labels import CorrectnessLabels

R_COLUMN = "r"
R_HAT_COLUMN = "r_hat"
ADVANTAGE_KEY = "advantages"  # TRL's key in `_logs`; shown as the table's "advantage" column


def record_labels(logs: dict, labels: CorrectnessLabels, rewards_per_func: torch.Tensor, group_size: int) -> None:
    """Write r, r̂ and r − r̂ for the round TRL has just logged (its last `N` rows, in gathered order)."""
    rows = labels.correct.numel()
    scorable = ~torch.isnan(rewards_per_func).all(dim=1).cpu()
    nan = torch.full((rows,), float("nan"))
    correct = torch.where(scorable, labels.correct.float().cpu(), nan)
    correct_rate = labels.group_correct_rate.float().cpu().repeat_interleave(group_size)

    advantages = logs[ADVANTAGE_KEY]
    for _ in range(min(rows, len(advantages))):  # TRL appended this round's GRPO advantages last
        advantages.pop()
    advantages.extend((correct - correct_rate).tolist())
    logs["extra"][R_COLUMN].extend(correct.tolist())
    logs["extra"][R_HAT_COLUMN].extend(correct_rate.tolist())


def _unbounded_like(logs: dict) -> dict:
    """Empty logs with TRL's layout whose columns never drop rows."""
    return {key: defaultdict(list) if isinstance(value, dict) else [] for key, value in logs.items()}


def _append_rows(target, column: list, rows: list[int], round_rows: int) -> None:
    if len(column) == round_rows:  # columns logged only sometimes (images of multimodal prompts) are skipped
        target.extend(column[row] for row in rows)


class LogRound:
    """Context manager for one dynamic-sampling round: only rows passed to `keep` reach the completions table.

        with LogRound(trainer) as round_log:
            output, labels = trainer._generate_and_label(inputs)
            round_log.keep(row_indices)          # gathered-row indices of the groups that enter the batch
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.kept_rows: list[int] = []
        self._saved = None

    def __enter__(self) -> LogRound:
        self._saved = self.trainer._logs
        self.trainer._logs = _unbounded_like(self._saved)
        return self

    def keep(self, rows) -> None:
        """Mark gathered-row indices (ints or a 1-D tensor) of this round to be shown; may be called repeatedly."""
        self.kept_rows.extend(int(row) for row in rows)

    def __exit__(self, exc_type, exc, traceback) -> None:
        round_logs, self.trainer._logs = self.trainer._logs, self._saved
        if exc_type is not None:
            return
        round_rows = len(round_logs["prompt"])
        for key, value in round_logs.items():
            if isinstance(value, dict):
                for name, column in value.items():
                    _append_rows(self._saved[key][name], column, self.kept_rows, round_rows)
            else:
                _append_rows(self._saved[key], value, self.kept_rows, round_rows)

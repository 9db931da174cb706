"""Learning-rate schedules: warmup, then decay, as a multiplier of the optimizer's learning rate."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from lit_vine.errors import check


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate of optimizer update ``k`` (0-based) is ``lr * factor(k)``.

    Args:
        warmup_steps: updates of warmup; when 0, ``warmup_ratio`` of all updates (rounded up).
        warmup_ratio: the VinePPO reference warms up over 3 % of its updates.
        warmup: ``linear``: ``(k + 1) / W``, so the first update already learns; ``log``: DeepSpeed's
            ``WarmupDecayLR`` as the VinePPO reference runs it (its default ``warmup_type``):
            updates 0 and 1 at lr 0, then ``log(k) / log(W)`` up to update ``W``.
        decay: after warmup: ``constant``, ``linear`` to 0 at the end of training, or ``cosine``.
    """

    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    warmup: Literal["linear", "log"] = "linear"
    decay: Literal["constant", "linear", "cosine"] = "constant"

    def __post_init__(self) -> None:
        check(self.warmup_steps >= 0, f"lr_schedule.warmup_steps must be >= 0, got {self.warmup_steps}")
        check(0 <= self.warmup_ratio < 1, f"lr_schedule.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        check(self.warmup in ("linear", "log"), f"lr_schedule.warmup must be 'linear' or 'log', got {self.warmup!r}")
        check(self.decay in ("constant", "linear", "cosine"), f"lr_schedule.decay must be 'constant', 'linear' or 'cosine', got {self.decay!r}")

    @property
    def needs_total(self) -> bool:
        return self.decay != "constant" or (self.warmup_steps == 0 and self.warmup_ratio > 0)

    def factor(self, k: int, total: int | None = None) -> float:
        """Multiplier for update ``k`` of ``total`` (needed for ``warmup_ratio`` and decay)."""
        W = self.warmup_steps or (math.ceil(self.warmup_ratio * total) if self.warmup_ratio else 0)
        if self.warmup == "log":
            # DeepSpeed steps its scheduler after each update, from -1: update k runs at gamma(k - 1).
            k -= 1
            if k < 0:
                return 0.0
            W = max(2, W)  # DeepSpeed's floor
            if k < W:
                return math.log(k + 1) / math.log(W)
        elif k < W:
            return (k + 1) / W
        if self.decay == "constant":
            return 1.0
        remaining = max(1, total - W)
        if self.decay == "linear":
            return max(0.0, (total - k) / remaining)
        # float32 cosine, as the shipped SFT checkpoint was made with it
        return float(0.5 * (1 + torch.cos(torch.tensor(math.pi * min(1.0, (k - W) / remaining)))))

    def scheduler(self, optimizer: torch.optim.Optimizer, total: int | None) -> torch.optim.lr_scheduler.LambdaLR:
        check(not self.needs_total or (total is not None and math.isfinite(total)),
              "lr_schedule: warmup_ratio and decay need a finite number of training steps (set trainer.max_epochs)")
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: self.factor(k, total))

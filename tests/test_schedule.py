"""Learning-rate schedules against hand-worked values and an independent model of DeepSpeed's
WarmupDecayLR stepping (the schedule the VinePPO reference trains with)."""

import math

import pytest
import torch

from lit_vine.errors import ConfigError
from lit_vine.schedule import LRSchedule


def lrs(schedule: LRSchedule, total: int, updates: int) -> list[float]:
    """The learning rate each of the first ``updates`` optimizer updates runs at (base lr 1)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedule.scheduler(opt, total)
    out = []
    for _ in range(updates):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_linear_decay_by_hand():
    # W = 4: (k + 1) / 4 for k < 4, then (10 - k) / (10 - 4)
    assert lrs(LRSchedule(warmup_steps=4, decay="linear"), total=10, updates=10) == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    )


def test_constant_after_warmup():
    assert lrs(LRSchedule(warmup_steps=2), total=None, updates=4) == pytest.approx([0.5, 1.0, 1.0, 1.0])


def deepspeed_warmup_decay(total: int, warmup: int, updates: int) -> list[float]:
    """DeepSpeed's WarmupDecayLR as its documentation describes it (warmup_type "log", the default):
    the scheduler starts at last_batch_iteration = -1 (lr 0) and steps after every update;
    gamma(i) = log(i + 1) / log(W) for i < W, then (T - i) / (T - W), W = max(2, warmup)."""
    W = max(2, warmup)
    last, lr, out = -1, 0.0, []
    for _ in range(updates):
        out.append(lr)  # this update runs at the current lr
        last += 1
        lr = math.log(last + 1) / math.log(W) if last < W else max(0.0, (total - last) / max(1, total - W))
    return out


def test_log_warmup_reproduces_deepspeed_warmup_decay():
    total = 200  # e.g. 10 iterations x 2 PPO epochs x 10 mini-batches
    ours = lrs(LRSchedule(warmup_ratio=0.03, warmup="log", decay="linear"), total=total, updates=total)
    assert ours == pytest.approx(deepspeed_warmup_decay(total, math.ceil(0.03 * total), total), abs=1e-12)
    assert ours[:2] == [0.0, 0.0] and ours[7] == pytest.approx(1.0)  # W = 6: peak at update 7


def test_warmup_ratio_and_decay_need_a_finite_run():
    with pytest.raises(ConfigError, match="finite number of training steps"):
        LRSchedule(warmup_ratio=0.03).scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), float("inf"))
    with pytest.raises(ConfigError, match="warmup_ratio"):
        LRSchedule(warmup_ratio=1.5)

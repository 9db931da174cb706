"""Critic-free, sequence-level methods: one advantage per response from the other responses to
its prompt (GRPO, RLOO) or from the whole batch (REINFORCE)."""

from __future__ import annotations

from torch import Tensor

from lit_vine.advantages import group_advantages
from lit_vine.algorithms.base import Algorithm, RolloutContext
from lit_vine.experience import Rollouts


class GroupBaseline(Algorithm):
    """Critic-free, sequence-level: every token of a response gets the response's advantage.

    The score of a response is the sum of its token rewards (R, minus the KL penalty when
    ``kl_in="reward"``); ``baseline`` picks what is subtracted from it.
    """

    abstract = True  # a family, not a method: left out of the command line's list
    baseline: str = "mean"
    normalize_std: bool = False

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        scores = (rollouts.token_rewards * rollouts.response_mask).sum(-1)
        seq_adv = group_advantages(scores, rollouts.group.to(scores.device), self.baseline, self.normalize_std)
        return seq_adv[:, None] * rollouts.response_mask, None


class GRPO(GroupBaseline):
    """GRPO (Shao et al. 2024): A = (R - mean of the prompt's group) / (std of the group + eps),
    std unbiased, eps 1e-6, no further whitening (as verl's GRPO).

    Args:
        normalize_std: divide by the group's std (Dr. GRPO argues for ``False``).
    """

    min_responses_per_prompt = 2  # a group of one has no baseline (and no std)

    def __init__(self, normalize_std: bool = True) -> None:
        self.normalize_std = normalize_std


class RLOO(GroupBaseline):
    """REINFORCE leave-one-out (Ahmadian et al. 2024): A = R - mean of the other G-1 responses,
    not whitened (whitening would make it REINFORCE++-baseline and give an all-correct group a
    non-zero, length-dependent advantage)."""

    baseline = "leave_one_out"
    min_responses_per_prompt = 2


class Reinforce(GroupBaseline):
    """REINFORCE with a batch baseline: A = R - mean reward of the whole batch."""

    baseline = "batch"

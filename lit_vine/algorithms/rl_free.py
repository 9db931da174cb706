"""RL-free baselines of the VinePPO paper: RestEM (fine-tune on the correct samples) and DPO+
(DPO-Positive on correct/incorrect pairs)."""

from __future__ import annotations

import torch
from torch import Tensor

from lit_vine.algorithms.base import Algorithm, RolloutContext
from lit_vine.errors import check
from lit_vine.experience import Rollouts


class RestEM(Algorithm):
    """RestEM (Singh et al. 2024): keep correct samples, at most ``max_per_prompt`` per prompt,
    and fine-tune on them (weighted NLL: weight 1 on kept responses, 0 elsewhere).

    Args:
        max_per_prompt: cap on kept correct responses per prompt (keeps easy prompts from dominating).
    """

    objective = "nll"

    def __init__(self, max_per_prompt: int = 4) -> None:
        check(max_per_prompt >= 1, f"algorithm.max_per_prompt must be >= 1, got {max_per_prompt}")
        self.max_per_prompt = max_per_prompt

    def keep(self, scores: Tensor, group: Tensor) -> Tensor:
        """``(B,)`` bool: correct responses, the first ``max_per_prompt`` of each prompt."""
        kept = torch.zeros_like(scores, dtype=torch.bool)
        taken: dict[int, int] = {}
        for b, (score, g) in enumerate(zip(scores.tolist(), group.tolist())):
            if score > 0 and taken.get(g, 0) < self.max_per_prompt:
                kept[b], taken[g] = True, taken.get(g, 0) + 1
        return kept

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        kept = self.keep(rollouts.scores, rollouts.group).to(rollouts.response_mask.dtype)
        ctx.stats["restem/kept_fraction"] = float(kept.mean())
        return kept[:, None] * rollouts.response_mask, None

    def training_rows(self, rollouts: Rollouts, advantages: Tensor) -> Tensor:
        """The kept responses only."""
        return (advantages != 0).any(-1).nonzero().flatten().cpu()


class DPOPlus(Algorithm):
    """DPO-Positive (Pal et al. 2024) on (correct, incorrect) pairs of responses to one prompt.

    Loss = -log sigmoid(beta * (margin_w - margin_l)) + lambda_dpop * max(0, log pi_ref(y_w) - log pi(y_w)),
    margins being log pi - log pi_ref summed over the response; the penalty keeps the chosen
    response's likelihood from falling.

    Args:
        beta: DPO temperature (paper: 0.1).
        lambda_dpop: weight of the positive-likelihood penalty (paper: 50).
        max_pairs_per_prompt: pairs formed per prompt (each correct response paired with an incorrect one).
    """

    objective = "dpo"
    min_responses_per_prompt = 2  # pairs come from one prompt's responses

    def __init__(self, beta: float = 0.1, lambda_dpop: float = 50.0, max_pairs_per_prompt: int = 4) -> None:
        check(beta > 0, f"algorithm.beta must be > 0, got {beta}")
        check(lambda_dpop >= 0, f"algorithm.lambda_dpop must be >= 0, got {lambda_dpop}")
        check(max_pairs_per_prompt >= 1, f"algorithm.max_pairs_per_prompt must be >= 1, got {max_pairs_per_prompt}")
        self.beta, self.lambda_dpop, self.max_pairs_per_prompt = beta, lambda_dpop, max_pairs_per_prompt

    def pairs(self, scores: Tensor, group: Tensor) -> list[tuple[int, int]]:
        """(chosen, rejected) episode indices: correct and incorrect responses of the same prompt."""
        out = []
        for g in group.unique().tolist():
            idx = (group == g).nonzero().flatten().tolist()
            good = [b for b in idx if scores[b] > 0]
            bad = [b for b in idx if scores[b] <= 0]
            out += list(zip(good, bad))[: self.max_pairs_per_prompt]
        return out

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        """Marks pairs for the trainer: +1 on the chosen response's tokens, -1 on the rejected one's."""
        sign = torch.zeros_like(rollouts.scores)
        for chosen, rejected in self.pairs(rollouts.scores, rollouts.group):
            sign[chosen], sign[rejected] = 1.0, -1.0
        ctx.stats["dpo/pairs"] = float((sign > 0).sum())
        return sign[:, None] * rollouts.response_mask, None

    def training_rows(self, rollouts: Rollouts, advantages: Tensor) -> Tensor:
        """(chosen, rejected) pairs side by side."""
        return torch.tensor([b for pair in self.pairs(rollouts.scores.cpu(), rollouts.group.cpu()) for b in pair], dtype=torch.long, device="cpu")

"""Losses. Per-token tensors are ``(B, T)`` over response tokens with ``mask`` 1 on real tokens."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]
Aggregation = Literal["token_mean", "seq_mean", "seq_sum"]


def log_ratio(logprobs: Tensor, other: Tensor, clip: float | None = None) -> Tensor:
    """``logprobs - other``, clamped to ``[-clip, clip]`` so that ``exp`` of it stays finite (verl: 20)."""
    diff = logprobs - other
    return diff if clip is None else diff.clamp(-clip, clip)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator, log_ratio_clip: float | None = None) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL").

    k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r, with log r = logp - logp_ref
    (clamped to +-``log_ratio_clip``). k3 equals the VinePPO paper's exp(ref - logp) - (ref - logp) - 1:
    unbiased and never negative.
    """
    log_r = log_ratio(logprobs, ref_logprobs, log_ratio_clip)
    if estimator == "k1":
        return log_r
    if estimator == "k2":
        return 0.5 * log_r**2
    if estimator == "k3":
        return torch.exp(-log_r) - 1 + log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


def aggregate(x: Tensor, mask: Tensor, how: Aggregation) -> Tensor:
    """``token_mean``: mean over every real token of the batch; ``seq_mean``: mean per sequence,
    then over sequences (each response weighs the same whatever its length); ``seq_sum``: sum over
    each response's tokens, mean over responses (the VinePPO reference's KL term; verl's
    ``seq-mean-token-sum``). A row without a masked token (a filler row that keeps ranks in step,
    lit_vine.experience) is no sequence."""
    if how == "token_mean":
        return (x * mask).sum() / mask.sum().clamp(min=1)
    sequences = (mask.sum(-1) > 0).sum().clamp(min=1)
    if how == "seq_mean":
        return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / sequences
    if how == "seq_sum":
        return (x * mask).sum(-1).sum() / sequences
    raise ValueError(f"unknown loss aggregation {how!r}; expected 'token_mean', 'seq_mean' or 'seq_sum'")


def ppo_policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: Aggregation = "token_mean",
    dual_clip: float | None = None,
    log_ratio_clip: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7): -min(r A, clip(r, 1-eps_low, 1+eps_high) A).

    ``dual_clip`` (c > 1, Ye et al. 2020; verl's default 3) also bounds the loss of a negative
    advantage by -c A, so a token whose ratio exploded cannot dominate the batch.
    """
    ratio = torch.exp(log_ratio(logprobs, old_logprobs, log_ratio_clip))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    losses = torch.max(unclipped, clipped)
    if dual_clip is not None:
        capped = torch.where(advantages < 0, torch.min(losses, -advantages * dual_clip), losses)
        dual_clipped, losses = (capped < losses), capped
    loss = aggregate(losses, mask, aggregation)
    with torch.no_grad():
        stats = {
            "clip_frac": aggregate((clipped > unclipped).float(), mask, "token_mean"),
            "ratio": aggregate(ratio, mask, "token_mean"),
            "approx_kl_old": aggregate(0.5 * (logprobs - old_logprobs) ** 2, mask, "token_mean"),
        }
        if dual_clip is not None:
            stats["dual_clip_frac"] = aggregate(dual_clipped.float(), mask, "token_mean")
    return loss, stats


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2, aggregation: Aggregation = "token_mean"
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss 0.5 * max((V - G)^2, (V_clip - G)^2), V_clip = V_old + clip(V - V_old, +-clip)."""
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = 0.5 * aggregate(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask, aggregation)
    with torch.no_grad():
        stats = {"value_clip_frac": aggregate(((clipped - returns) ** 2 > (values - returns) ** 2).float(), mask, "token_mean")}
    return loss, stats


def token_logprobs(logits: Tensor, tokens: Tensor, entropy_grad: bool = True, with_entropy: bool = True) -> tuple[Tensor, Tensor | None]:
    """Log-probabilities ``(B, T)`` of ``tokens`` under ``logits`` ``(B, T, V)``, in fp32, and the
    entropy ``(B, T)`` (``None`` with ``with_entropy=False``: scoring needs none, and it costs two
    more ``(B, T, V)`` tensors); ``entropy_grad=False`` computes it outside autograd (only logged:
    backward then keeps no extra ``(B, T, V)`` tensors for it)."""
    logp_all = F.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, None
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def dpo_positive_loss(
    logp_chosen: Tensor, logp_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float, lambda_dpop: float,
    valid: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO-Positive (Pal et al. 2024, eq. 3) on sequence log-likelihoods ``(N,)`` of N pairs.

    -log sigmoid(beta * ((lw - rw) - (ll - rl) - lambda_dpop * max(0, rw - lw))), averaged over pairs
    (over the ``valid`` ones, ``(N,)`` bool, when given): the penalty inside the sigmoid grows when
    the chosen response becomes less likely than under the reference.
    """
    weight = torch.ones_like(logp_chosen) if valid is None else valid.to(logp_chosen.dtype)
    count = weight.sum().clamp(min=1)

    def mean(x: Tensor) -> Tensor:
        return (x * weight).sum() / count

    penalty = torch.clamp(ref_chosen - logp_chosen, min=0)
    margin = (logp_chosen - ref_chosen) - (logp_rejected - ref_rejected)
    loss = mean(-F.logsigmoid(beta * (margin - lambda_dpop * penalty)))
    with torch.no_grad():
        stats = {"dpo_margin": mean(margin), "dpo_accuracy": mean((margin > 0).float()), "dpop_penalty": mean(penalty)}
    return loss, stats


def adaptive_kl_coef(coef: float, kl: float, target: float, horizon: int, steps: int) -> float:
    """Adaptive KL coefficient (Ziegler et al. 2019, sec. 2.2): beta *= 1 + K_beta * e, with the
    proportional error e = clip(KL / KL_target - 1, -0.2, 0.2) and K_beta = steps / horizon."""
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * steps / horizon)

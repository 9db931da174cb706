"""Advantage estimators. Per-token tensors are ``(B, T)`` over response tokens, right-padded,
with ``mask`` 1 on real tokens (which always form a prefix of the row)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from lit_vine.devices import FLOAT


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def _pooled(*values: Tensor) -> Tensor:
    """``values`` (scalars) summed over every process, in float64."""
    stats = torch.stack(values).double()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    return stats


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the masked entries, pooled across processes.

    ``var`` is the unbiased variance (divisor N - 1), as in the VinePPO reference, verl and TRL.
    Two passes in float64 (the mean, then the squared deviations from it), each summed over
    processes, give exactly the statistics of the concatenated batch and lose no precision when
    ``|mean| >> std``.
    """
    x64, mask64 = x.double(), mask.double()
    total, count = _pooled((x64 * mask64).sum(), mask64.sum()).unbind()
    mean = total / count.clamp(min=1)
    (squares,) = _pooled((((x64 - mean) ** 2) * mask64).sum()).unbind()
    var = squares / (count - 1).clamp(min=1)
    return ((x64 - mean) * torch.rsqrt(var + eps)).to(x.dtype) * mask


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float | Tensor) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16).

    ``values[:, t]`` is V(s_t), the value of the state before token t; the state after the last
    real token is terminal (V = 0). ``lam`` is one lambda or one per response ``(B,)`` (VAPO's
    length-adaptive lambda). Returns ``(advantages, returns)`` with returns = A + V, the critic's
    regression target for the same lambda.
    """
    B, T = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(T)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # TD error delta_t
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def length_adaptive_lambda(lengths: Tensor, alpha: float) -> Tensor:
    """VAPO's (Yue et al. 2025, eq. 7) policy lambda per response: 1 - 1 / (alpha * length),
    so a long response keeps its far-away reward (lambda near 1) and a short one trades variance
    for bias; clamped to [0, 1] for responses shorter than 1 / alpha tokens."""
    return (1 - 1 / (alpha * lengths.clamp(min=1).to(torch.float64))).clamp(0, 1)


def fill_values_past_cap(estimates: Sequence[float], num_states: int, reward: float) -> list[float]:
    """V(s_0..s_{n-1}) from MC estimates of the first states, the rest filled backwards.

    States past the ``max_steps`` cap have no estimate. Filling V(s_i) = r_i + V(s_{i+1}) from
    V(s_n) = 0 makes their advantage 0 and leaves all their credit to the last estimated step;
    since r_i = 0 except r_{n-1} = R, every filled value is R.
    """
    return list(estimates[:num_states]) + [reward] * (num_states - len(estimates))


def vine_advantages(
    state_values: Sequence[Sequence[float]],
    step_ends: Sequence[Sequence[int]],
    rewards: Sequence[float],
    T: int,
    device: torch.device | str = "cpu",
) -> Tensor:
    """VinePPO step advantages A_i = r_i + V(s_{i+1}) - V(s_i) broadcast to the step's tokens.

    Args:
        state_values: per episode, V(s_0..s_{n-1}) (MC means, already capped/filled).
        step_ends: per episode, the token count at which each of its n steps ends.
        rewards: per episode, the final reward R (r_i = 0 except r_{n-1} = R).
        T: width of the output.
        device: where the output lives (the rollouts' device).

    Returns ``(B, T)`` in fp32; gamma = lambda = 1, V(s_n) = 0 (terminal).
    """
    out = torch.zeros(len(rewards), T, dtype=FLOAT, device=device)
    for b, (values, ends, reward) in enumerate(zip(state_values, step_ends, rewards)):
        n = len(ends)
        v = list(values) + [0.0]
        start = 0
        for i, end in enumerate(ends):
            r_i = reward if i == n - 1 else 0.0
            out[b, start:end] = r_i + v[i + 1] - v[i]
            start = end
    return out


def spo_cutpoints(probs: Sequence[float], threshold: float, interval: int) -> list[int]:
    """SPO-chain's segment boundaries in one response (Guo et al. 2025): the states just before
    every ``interval``-th token (the first one included) whose sampling probability ``probs[t]``
    is below ``threshold``, as prefix lengths (response tokens in the state: 0 is the prompt)."""
    return [t for t, p in enumerate(probs) if p < threshold][::interval]


def group_advantages(scores: Tensor, group: Tensor, baseline: str, normalize_std: bool = False, eps: float = 1e-6) -> Tensor:
    """Sequence-level advantages from the responses of the same prompt (``group`` ids, ``(B,)``).

    ``baseline``: ``"mean"`` (GRPO: R - mean of the group, optionally / (sample std + eps)),
    ``"leave_one_out"`` (RLOO: R - mean of the other G-1 responses), ``"batch"`` (R - batch mean).
    """
    if baseline == "batch":
        adv = scores - scores.mean()
        return adv / (scores.std() + eps) if normalize_std else adv
    adv = torch.empty_like(scores)
    for g in group.unique():
        idx = group == g
        r = scores[idx]
        if baseline == "mean":
            a = r - r.mean()
            if normalize_std:
                a = a / (r.std() + eps)
        elif baseline == "leave_one_out":
            G = r.numel()
            if G < 2:
                raise ValueError("leave-one-out baseline needs at least 2 responses per prompt")
            a = r - (r.sum() - r) / (G - 1)
        else:
            raise ValueError(f"unknown baseline {baseline!r}; expected 'mean', 'leave_one_out' or 'batch'")
        adv[idx] = a
    return adv

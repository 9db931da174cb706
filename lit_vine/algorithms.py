"""Algorithms: how a batch of rollouts becomes per-token advantages (and critic targets).

Pick one in YAML (``model.init_args.algorithm.class_path``) or on the command line with
``--model.algorithm VinePPO`` / ``PPO``; its knobs follow, e.g. ``--model.algorithm.num_mc_rollouts 9``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_vine.advantages import fill_values_past_cap, gae, vine_advantages
from lit_vine.experience import Rollouts
from lit_vine.rollout.engine import RolloutEngine, SamplingParams
from lit_vine.steps import step_token_ends
from lit_vine.tasks.base import Task


@dataclass
class RolloutContext:
    """What an estimator may use besides the rollouts themselves."""

    engine: RolloutEngine
    tokenizer: PreTrainedTokenizerBase
    task: Task
    sampling: SamplingParams  # the training sampling parameters
    seed: int
    stats: dict[str, float] = field(default_factory=dict)  # estimator statistics to log


class Algorithm:
    """Base class. ``uses_critic`` tells the trainer to build and train a value model."""

    uses_critic: bool = False

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, Tensor | None]:
        """Per-token advantages ``(B, T)`` and critic targets ``(B, T)`` (``None`` without critic)."""
        raise NotImplementedError


class PPO(Algorithm):
    """PPO with a learned critic and GAE (the VinePPO paper's baseline: gamma = lambda = 1).

    Args:
        gamma: discount.
        lam: GAE lambda for the policy's advantages.
        critic_lam: GAE lambda for the critic's targets; ``None`` uses ``lam`` (classic PPO).
            VC-PPO's decoupled GAE sets ``lam=0.95, critic_lam=1.0``.
    """

    uses_critic = True

    def __init__(self, gamma: float = 1.0, lam: float = 1.0, critic_lam: float | None = None) -> None:
        for name, value in [("gamma", gamma), ("lam", lam), ("critic_lam", critic_lam)]:
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"PPO.{name} must be in [0, 1], got {value}")
        self.gamma, self.lam, self.critic_lam = gamma, lam, critic_lam

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, Tensor]:
        assert rollouts.values is not None, "PPO needs critic values"
        mask, rewards, values = rollouts.response_mask, rollouts.token_rewards, rollouts.values
        advantages, returns = gae(rewards, values, mask, self.gamma, self.lam)
        if self.critic_lam is not None and self.critic_lam != self.lam:
            _, returns = gae(rewards, values, mask, self.gamma, self.critic_lam)
        return advantages, returns


class VinePPO(Algorithm):
    """VinePPO (Kazemnejad et al. 2024): step values from Monte Carlo rollouts, no critic.

    Args:
        num_mc_rollouts: K continuations sampled from every step boundary (paper: 9).
        max_steps: states that get an MC estimate per response (paper: 25 for GSM8K); later steps
            get advantage 0 and their credit goes to the last estimated step.
    """

    def __init__(self, num_mc_rollouts: int = 9, max_steps: int = 25) -> None:
        if num_mc_rollouts < 1:
            raise ValueError(f"VinePPO.num_mc_rollouts (K) must be >= 1, got {num_mc_rollouts}")
        if max_steps < 1:
            raise ValueError(f"VinePPO.max_steps must be >= 1, got {max_steps}")
        self.num_mc_rollouts, self.max_steps = num_mc_rollouts, max_steps

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        start = time.perf_counter()
        eos = ctx.tokenizer.eos_token_id
        step_ends, states = [], []
        for text, response in zip(rollouts.texts, rollouts.response_ids):
            body = response[:-1] if response and response[-1] == eos else response
            ends = step_token_ends(body, ctx.task.split_steps(text), ctx.tokenizer)
            ends[-1] = len(response)  # EOS belongs to the last step
            step_ends.append(ends)
            # States s_0..s_{n-1}: the prompt, then the prompt plus each finished step.
            states.append([0] + ends[:-1][: self.max_steps - 1])

        # Identical states (s_0 of every response to a prompt, repeated prefixes) are sampled once.
        unique: dict[tuple[int, ...], int] = {}
        requests, owners = [], []
        for b, cuts in enumerate(states):
            for cut in cuts:
                key = tuple(rollouts.prompt_ids[b] + rollouts.response_ids[b][:cut])
                if key not in unique:
                    unique[key] = len(requests)
                    requests.append(list(key))
                    owners.append((b, cut))
        params = ctx.sampling.with_(n=self.num_mc_rollouts)
        continuations = ctx.engine.generate(requests, params, seed=ctx.seed)

        mc_value = []
        for (b, cut), conts in zip(owners, continuations):
            prefix = rollouts.response_ids[b][:cut]
            budget = ctx.sampling.max_new_tokens - cut
            rewards = [ctx.task.score(prefix + cont[:budget], rollouts.problems[b], ctx.tokenizer)[1] for cont in conts]
            mc_value.append(sum(rewards) / len(rewards))

        state_values = []
        for b, cuts in enumerate(states):
            key = lambda cut: tuple(rollouts.prompt_ids[b] + rollouts.response_ids[b][:cut])  # noqa: E731
            estimates = [mc_value[unique[key(cut)]] for cut in cuts]
            state_values.append(fill_values_past_cap(estimates, len(step_ends[b]), float(rollouts.scores[b])))

        T = rollouts.response_mask.shape[1]
        advantages = vine_advantages(state_values, step_ends, rollouts.scores.tolist(), T)
        # KL given as a per-token reward (kl_in="reward") has no MC estimate: it enters as reward-to-go.
        kl_rewards = rollouts.token_rewards.clone()
        last = rollouts.response_mask.sum(-1).long() - 1
        kl_rewards[torch.arange(len(last)), last] -= rollouts.scores
        advantages = advantages + kl_rewards.flip(-1).cumsum(-1).flip(-1)

        values = torch.tensor([v for vs in state_values for v in vs])
        ctx.stats.update(
            {
                "vine/mc_requests": float(len(requests)),
                "vine/mc_dedup_saved": float(sum(len(c) for c in states) - len(requests)),
                "vine/steps_per_response": sum(len(e) for e in step_ends) / len(step_ends),
                "vine/value_mean": float(values.mean()),
                "time/value_estimation": time.perf_counter() - start,
            }
        )
        return advantages * rollouts.response_mask, None

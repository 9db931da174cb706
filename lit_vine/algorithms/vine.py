"""VinePPO: step values from Monte Carlo rollouts, no critic; and the Monte Carlo value helper
that SPO-chain shares with it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from lit_vine.advantages import fill_values_past_cap, vine_advantages
from lit_vine.algorithms.base import Algorithm, RolloutContext
from lit_vine.errors import check
from lit_vine.experience import Rollouts
from lit_vine.steps import step_token_ends


class VinePPO(Algorithm):
    """VinePPO (Kazemnejad et al. 2024): step values from Monte Carlo rollouts, no critic.

    As in the authors' code: each MC continuation may generate up to ``max_new_tokens`` new tokens
    from its state (bounded by the model's context), and advantages are whitened per PPO mini-batch.

    Args:
        num_mc_rollouts: K continuations sampled from every step boundary (paper: 9).
        max_step_for_value_estimation: the reference's knob of that name: states s_0..s_c get MC
            estimates (c + 1 of them; GSM8K: 25, MATH: none); later steps get advantage 0 and
            their credit goes to the last estimated step. ``None``: every state.
    """

    whitening = "mini_batch"

    def __init__(self, num_mc_rollouts: int = 9, max_step_for_value_estimation: int | None = None) -> None:
        check(num_mc_rollouts >= 1, f"algorithm.num_mc_rollouts (K) must be >= 1, got {num_mc_rollouts}")
        check(max_step_for_value_estimation is None or max_step_for_value_estimation >= 0,
              f"algorithm.max_step_for_value_estimation must be >= 0 or null, got {max_step_for_value_estimation}")
        self.num_mc_rollouts, self.max_step_for_value_estimation = num_mc_rollouts, max_step_for_value_estimation

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        start = time.perf_counter()
        eos = ctx.tokenizer.eos_token_id
        step_ends, states = [], []
        for text, response in zip(rollouts.texts, rollouts.response_ids):
            body = response[:-1] if response and response[-1] == eos else response
            ends = step_token_ends(body, ctx.task.split_steps(text), ctx.tokenizer)
            ends[-1] = len(response)  # EOS belongs to the last step
            step_ends.append(ends)
            # States s_0..s_{n-1}: the prompt, then the prompt plus each finished step; at most s_0..s_c.
            states.append([0] + ends[:-1][: self.max_step_for_value_estimation])

        estimates = monte_carlo_values(rollouts, ctx, states, self.num_mc_rollouts)
        state_values = [fill_values_past_cap(v, len(ends), float(r)) for v, ends, r in zip(estimates, step_ends, rollouts.scores)]
        T = rollouts.response_mask.shape[1]
        advantages = vine_advantages(state_values, step_ends, rollouts.scores.tolist(), T, rollouts.scores.device) + kl_reward_to_go(rollouts)

        values = [v for vs in state_values for v in vs]
        ctx.stats.update(
            {
                "vine/steps_per_response": sum(len(e) for e in step_ends) / len(step_ends),
                "vine/value_mean": sum(values) / len(values),
                "time/value_estimation": time.perf_counter() - start,
            }
        )
        return advantages * rollouts.response_mask, None



def monte_carlo_values(rollouts: Rollouts, ctx: RolloutContext, states: Sequence[Sequence[int]], num_mc_rollouts: int) -> list[list[float]]:
    """V of every listed state: the mean reward of ``num_mc_rollouts`` continuations sampled with
    the training sampling parameters. ``states[b]`` are prefix lengths of response b (0: the prompt
    alone). Identical states (the prompt of every response to it, repeated prefixes) are sampled
    once; all requests of the iteration go to the engine in one call and are graded in one call."""
    unique: dict[tuple[int, ...], int] = {}
    requests, owners, request_of = [], [], []  # request_of[b][i]: the request of states[b][i]
    for b, cuts in enumerate(states):
        request_of.append([])
        for cut in cuts:
            key = tuple(rollouts.prompt_ids[b] + rollouts.response_ids[b][:cut])
            if key not in unique:
                unique[key] = len(requests)
                requests.append(list(key))
                owners.append((b, cut))
            request_of[b].append(unique[key])
    continuations = ctx.engine.generate(requests, ctx.sampling.with_(n=num_mc_rollouts), seed=ctx.seed)
    graded = ctx.task.score_many(  # MATH: a pool of memoizing grader workers
        [(rollouts.response_ids[b][:cut] + cont, rollouts.problems[b]) for (b, cut), conts in zip(owners, continuations) for cont in conts],
        ctx.tokenizer,
    )
    K = num_mc_rollouts
    mc_value = [sum(reward for _, reward in graded[j * K : (j + 1) * K]) / K for j in range(len(owners))]
    ctx.stats.update({"vine/mc_requests": float(len(requests)), "vine/mc_rollouts": float(len(requests) * K),
                      "vine/mc_dedup_saved": float(sum(map(len, states)) - len(requests))})
    return [[mc_value[j] for j in requests_b] for requests_b in request_of]


def kl_reward_to_go(rollouts: Rollouts) -> Tensor:
    """``(B, T)``: the KL penalty given as a per-token reward (``kl_in="reward"``) summed from each
    token to the end; MC values hold only the task reward, so it enters the advantages here."""
    kl_rewards = rollouts.token_rewards.clone()
    last = rollouts.response_mask.sum(-1).long() - 1
    kl_rewards[torch.arange(len(last), device=last.device), last] -= rollouts.scores
    return kl_rewards.flip(-1).cumsum(-1).flip(-1)

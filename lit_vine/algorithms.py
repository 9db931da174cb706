"""Algorithms: how a batch of rollouts becomes per-token advantages (and critic targets).

Pick one in YAML (``model.init_args.algorithm.class_path``) or on the command line with
``--model.algorithm VinePPO`` (``PPO``, ``VCPPO``, ``GRPO``, ``RLOO``, ``Reinforce``, ``RestEM``,
``DPOPlus``, ``SPOChain``; any case and the usual spellings too: ``vineppo``, ``vc-ppo``, ``dpo+``); its knobs
follow, e.g. ``--model.algorithm.num_mc_rollouts 9``.

``objective`` tells the trainer which loss the advantages feed: the clipped PPO surrogate, a
weighted negative log-likelihood (RestEM's SFT on filtered samples) or the DPO-Positive loss.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_vine.advantages import fill_values_past_cap, gae, group_advantages, length_adaptive_lambda, spo_cutpoints, vine_advantages
from lit_vine.blame import blame_statistics
from lit_vine.errors import check
from lit_vine.experience import Rollouts, pad_rows
from lit_vine.rollout.engine import RolloutEngine, SamplingParams
from lit_vine.steps import step_token_ends
from lit_vine.tasks.base import Problem, Task


@dataclass
class RolloutContext:
    """What an estimator may use besides the rollouts themselves."""

    engine: RolloutEngine
    tokenizer: PreTrainedTokenizerBase
    task: Task
    sampling: SamplingParams  # the training sampling parameters
    seed: int
    stats: dict[str, float] = field(default_factory=dict)  # estimator statistics to log


Whitening = Literal["batch", "mini_batch", "none"]


@dataclass
class Episode:
    """One training episode as sampled: the prompt it continues (a tree's edge continues its
    parent's whole text), its response tokens and, when the algorithm knows it already, its return
    (``None``: the task grades the response)."""

    problem: int  # index into the iteration's problems
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float | None = None


class Algorithm:
    """Base class. ``uses_critic`` tells the trainer to build and train a value model;
    ``value_pretrain_iterations`` how many first iterations train the critic alone; ``whitening``
    is the advantage whitening its paper's code uses (``RLModule.whiten_advantages`` overrides it);
    ``min_responses_per_prompt`` the smallest group it is defined for."""

    uses_critic: bool = False
    objective: Literal["ppo", "nll", "dpo"] = "ppo"
    value_pretrain_iterations: int = 0
    value_pretrain_patience: int = 1
    whitening: Whitening = "none"
    min_responses_per_prompt: int = 1

    whole_responses: bool = True  # episodes are whole responses to the prompt (step blame applies)

    def sample(self, prompts: list[list[int]], problems: list[Problem], params: SamplingParams, ctx: RolloutContext, seed: int) -> list[Episode]:
        """The iteration's episodes: ``params.n`` responses to every prompt."""
        sampled = ctx.engine.generate(prompts, params, seed=seed)
        return [Episode(i, prompts[i], ids) for i, group in enumerate(sampled) for ids in group]

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, Tensor | None]:
        """Per-token advantages ``(B, T)`` and critic targets ``(B, T)`` (``None`` without critic)."""
        raise NotImplementedError

    def training_rows(self, rollouts: Rollouts, advantages: Tensor) -> Tensor:
        """Indices of the episodes the objective trains on (all, by default)."""
        return torch.arange(len(rollouts.scores))

    def policy_mask(self, rollouts: Rollouts) -> Tensor | None:
        """``(B, T)``: the response tokens the policy loss and whitening use; ``None``: all of them."""
        return None


class PPO(Algorithm):
    """PPO with a learned critic and GAE (the VinePPO paper's baseline: gamma = lambda = 1).
    Advantages are whitened per PPO mini-batch, as in the VinePPO reference's PPO trainer.

    Args:
        gamma: discount.
        lam: GAE lambda for the policy's advantages.
        critic_lam: GAE lambda for the critic's targets; ``None`` uses ``lam`` (classic PPO).
            VC-PPO's decoupled GAE sets ``lam=0.95, critic_lam=1.0``.
        length_adaptive_alpha: VAPO's length-adaptive policy lambda, 1 - 1 / (alpha * length)
            per response, in place of ``lam`` (VAPO: 0.05; ``critic_lam`` stays); ``None``: off.
    """

    uses_critic = True
    whitening = "mini_batch"

    def __init__(self, gamma: float = 1.0, lam: float = 1.0, critic_lam: float | None = None, length_adaptive_alpha: float | None = None) -> None:
        for name, value in [("gamma", gamma), ("lam", lam), ("critic_lam", critic_lam)]:
            check(value is None or 0 <= value <= 1, f"algorithm.{name} must be in [0, 1], got {value}")
        check(length_adaptive_alpha is None or length_adaptive_alpha > 0, f"algorithm.length_adaptive_alpha must be > 0, got {length_adaptive_alpha}")
        self.gamma, self.lam, self.critic_lam, self.length_adaptive_alpha = gamma, lam, critic_lam, length_adaptive_alpha

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, Tensor]:
        assert rollouts.values is not None, "PPO needs critic values"
        mask, rewards, values = rollouts.response_mask, rollouts.token_rewards, rollouts.values
        lam = self.lam
        if self.length_adaptive_alpha is not None:
            lam = length_adaptive_lambda(mask.sum(-1), self.length_adaptive_alpha).to(rewards.dtype)
        advantages, returns = gae(rewards, values, mask, self.gamma, lam)
        critic_lam = self.lam if self.critic_lam is None else self.critic_lam
        if self.length_adaptive_alpha is not None or critic_lam != self.lam:
            _, returns = gae(rewards, values, mask, self.gamma, critic_lam)
        return advantages, returns


class VCPPO(PPO):
    """Value-calibrated PPO (Yuan et al. 2025): value pretraining, then decoupled GAE. Built on
    verl, which whitens GAE advantages over the whole batch.

    Args:
        lam: lambda_actor for the policy's advantages (best in [0.95, 1.0)).
        critic_lam: lambda_critic for the critic's targets (1.0: Monte Carlo returns, unbiased).
        value_pretrain_iterations: at most this many first iterations train only the critic, on
            responses of the still-frozen SFT policy against lambda = 1 returns.
        value_pretrain_patience: pretraining ends early once the critic's explained variance has
            not improved for this many iterations (more pretraining overfits).
        length_adaptive_alpha: VAPO (Yue et al. 2025) on top: the policy's lambda per response is
            1 - 1 / (alpha * length) (VAPO: alpha 0.05); ``None``: the fixed ``lam``.
    """

    whitening = "batch"

    def __init__(
        self,
        gamma: float = 1.0,
        lam: float = 0.95,
        critic_lam: float = 1.0,
        value_pretrain_iterations: int = 10,
        value_pretrain_patience: int = 2,
        length_adaptive_alpha: float | None = None,
    ) -> None:
        super().__init__(gamma, lam, critic_lam, length_adaptive_alpha)
        check(value_pretrain_iterations >= 0, f"algorithm.value_pretrain_iterations must be >= 0, got {value_pretrain_iterations}")
        check(value_pretrain_patience >= 1, f"algorithm.value_pretrain_patience must be >= 1, got {value_pretrain_patience}")
        self.value_pretrain_iterations, self.value_pretrain_patience = value_pretrain_iterations, value_pretrain_patience


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
        return torch.tensor([b for pair in self.pairs(rollouts.scores.cpu(), rollouts.group) for b in pair], dtype=torch.long)


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
        advantages = vine_advantages(state_values, step_ends, rollouts.scores.tolist(), T) + kl_reward_to_go(rollouts)

        values = torch.tensor([v for vs in state_values for v in vs])
        ctx.stats.update(
            {
                "vine/steps_per_response": sum(len(e) for e in step_ends) / len(step_ends),
                "vine/value_mean": float(values.mean()),
                "time/value_estimation": time.perf_counter() - start,
            }
        )
        return advantages * rollouts.response_mask, None


class SPOChain(Algorithm):
    """SPO-chain (Guo et al. 2025, arXiv 2505.23564): VinePPO's Monte Carlo values, taken at
    segment boundaries instead of reasoning steps, and a probability-masked objective.

    As in the authors' code (AIFrameResearch/SPO, built on the VinePPO authors' codebase): a *cut
    point* is a response token the sampling policy gave probability below ``prob_threshold``;
    every ``cutpoint_interval``-th cut point (the first included) opens a segment, its boundary the
    state just before that token. Segment k's tokens get V(b_{k+1}) - V(b_k), the last segment's
    R - V(b_last), tokens before the first boundary 0; then only cut-point tokens keep their
    advantage and enter the policy loss and the whitening (the *probability mask*), since
    near-certain tokens carry no decision.

    Args:
        num_mc_rollouts: K continuations from every boundary (paper: 9).
        cutpoint_interval: cut points per segment (paper: 5 for "SPO-chain int5").
        prob_threshold: cut points and the mask use p < this (paper: 0.9).
    """

    whitening = "mini_batch"

    def __init__(self, num_mc_rollouts: int = 9, cutpoint_interval: int = 5, prob_threshold: float = 0.9) -> None:
        check(num_mc_rollouts >= 1, f"algorithm.num_mc_rollouts (K) must be >= 1, got {num_mc_rollouts}")
        check(cutpoint_interval >= 1, f"algorithm.cutpoint_interval must be >= 1, got {cutpoint_interval}")
        check(0 < prob_threshold <= 1, f"algorithm.prob_threshold must be in (0, 1], got {prob_threshold}")
        self.num_mc_rollouts, self.cutpoint_interval, self.prob_threshold = num_mc_rollouts, cutpoint_interval, prob_threshold

    def policy_mask(self, rollouts: Rollouts) -> Tensor:
        return probability_mask(rollouts, self.prob_threshold)

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        start = time.perf_counter()
        probs, mask = rollouts.old_logprobs.exp(), self.policy_mask(rollouts)
        lengths = [len(r) for r in rollouts.response_ids]
        boundaries = [spo_cutpoints(probs[b, :n].tolist(), self.prob_threshold, self.cutpoint_interval) for b, n in enumerate(lengths)]
        estimates = monte_carlo_values(rollouts, ctx, boundaries, self.num_mc_rollouts)
        # As VinePPO's steps: segment 0 = the tokens before the first boundary, valued so that its
        # advantage is 0 (V(b_0) - V(b_0)); a response without cut points gets R - R = 0 throughout.
        values = [[v[0] if v else float(r)] + v for v, r in zip(estimates, rollouts.scores)]
        ends = [b + [n] for b, n in zip(boundaries, lengths)]
        T = rollouts.response_mask.shape[1]
        advantages = vine_advantages(values, ends, rollouts.scores.tolist(), T) + kl_reward_to_go(rollouts)
        ctx.stats.update(
            {
                "spo/segments_per_response": sum(len(b) + 1 for b in boundaries) / len(boundaries),
                "spo/masked_token_share": float(1 - mask.sum() / rollouts.response_mask.sum()),
                "time/value_estimation": time.perf_counter() - start,
            }
        )
        return advantages * mask, None


class SPOTree(Algorithm):
    """SPO-tree (Guo et al. 2025, arXiv 2505.23564): each prompt grows a tree whose samples are at
    once the training episodes and the Monte Carlo estimates of their parents' values.

    As in the authors' code (``hybrid_inference_strategy.py``, ``tree_episode_generator.py``): the
    root is the prompt; a node at depth d < D - 1 gets ``branching[d]`` children of
    ``segment_tokens`` new tokens each, the last depth's children run to the end (within
    ``max_new_tokens`` for the whole response). A leaf (the last depth, or a segment that ended with
    EOS or ran out of room) is worth its reward; every other node the mean of its children's worth.
    Every edge parent -> child is an episode: the prompt is the parent's whole text, the response
    the child's segment, every token's advantage V(child) - V(parent). Edges with advantage 0 are
    dropped (the authors' ``only_adv_greater_than_zero``, which drops exactly those), at most
    ``max_edges_per_prompt`` are kept per prompt (a seeded draw), and the loss sees the
    low-probability tokens only, as SPO-chain. The authors carry the edges over the cap into later
    iterations (an on-policy replay buffer of up to 8 iterations); lit-vine drops them.

    Args:
        branching: children per node at each depth (paper, GSM8K: [6, 6, 6]). The trainer's
            ``responses_per_prompt`` only sizes the iteration: it makes prompts x
            responses_per_prompt / mini_batch_size optimizer steps of the kept edges.
        segment_tokens: new tokens per segment above the last depth (paper: 30).
        max_edges_per_prompt: edges per prompt trained on per iteration (paper: 32).
        prob_threshold: the probability mask: the loss uses tokens with p < this (paper: 0.9).
    """

    whitening = "mini_batch"
    whole_responses = False

    def __init__(self, branching: Sequence[int] = (6, 6, 6), segment_tokens: int = 30, max_edges_per_prompt: int | None = 32, prob_threshold: float = 0.9) -> None:
        check(len(branching) >= 1 and all(b >= 1 for b in branching), f"algorithm.branching must be a non-empty list of numbers >= 1, got {branching}")
        check(segment_tokens >= 1, f"algorithm.segment_tokens must be >= 1, got {segment_tokens}")
        check(max_edges_per_prompt is None or max_edges_per_prompt >= 1, f"algorithm.max_edges_per_prompt must be >= 1 or null, got {max_edges_per_prompt}")
        check(0 < prob_threshold <= 1, f"algorithm.prob_threshold must be in (0, 1], got {prob_threshold}")
        self.branching, self.segment_tokens = list(branching), segment_tokens
        self.max_edges_per_prompt, self.prob_threshold = max_edges_per_prompt, prob_threshold
        self._advantages: list[float] = []  # of the episodes sample() returned last

    def grow(self, prompts: list[list[int]], problems: list[Problem], params: SamplingParams, ctx: RolloutContext, seed: int) -> list[TreeNode]:
        """The trees, one per prompt (their roots), every node valued."""
        eos = ctx.tokenizer.eos_token_id
        roots = [TreeNode(problem=i, response=[], segment=[]) for i in range(len(prompts))]
        frontier = roots
        for depth, width in enumerate(self.branching):
            last = depth == len(self.branching) - 1
            room = params.max_new_tokens - depth * self.segment_tokens  # every frontier node holds depth * M tokens
            step = params.with_(n=width, max_new_tokens=room if last else min(room, self.segment_tokens))
            sampled = ctx.engine.generate([prompts[node.problem] + node.response for node in frontier], step, seed=seed + depth)
            grown = []
            for node, segments in zip(frontier, sampled):
                for segment in segments:
                    child = TreeNode(node.problem, node.response + list(segment), segment)
                    child.leaf = last or not segment or segment[-1] == eos or len(child.response) >= params.max_new_tokens
                    node.children.append(child)
                    grown.append(child)
            frontier = [node for node in grown if not node.leaf]
            if not frontier:
                break
        leaves = [node for root in roots for node in root.walk() if not node.children]
        rewards = ctx.task.score_many([(node.response, problems[node.problem]) for node in leaves], ctx.tokenizer)
        for node, (_, reward) in zip(leaves, rewards):
            node.value = reward
        for root in roots:
            root.evaluate()
        return roots

    def sample(self, prompts: list[list[int]], problems: list[Problem], params: SamplingParams, ctx: RolloutContext, seed: int) -> list[Episode]:
        roots = self.grow(prompts, problems, params, ctx, seed)
        rng = random.Random(seed)
        episodes, advantages = [], []
        for root in roots:
            edges = [(parent, child) for parent in root.walk() for child in parent.children if child.value != parent.value]
            if self.max_edges_per_prompt is not None and len(edges) > self.max_edges_per_prompt:
                edges = rng.sample(edges, self.max_edges_per_prompt)
            for parent, child in edges:
                episodes.append(Episode(root.problem, prompts[root.problem] + parent.response, child.segment, child.value))
                advantages.append(child.value - parent.value)
        self._advantages = advantages
        if ctx.task.checks_steps:  # step blame over whole responses: the root-to-leaf paths
            ctx.stats.update(self.path_blame(roots, problems, ctx))
        nodes = [node for root in roots for node in root.walk()][len(roots):]
        leaves = [node.value for node in nodes if not node.children]
        ctx.stats.update({
            "rollout/reward": sum(leaves) / max(len(leaves), 1),  # of whole responses, not of edges
            "spo/tree_nodes": float(len(nodes)),
            "spo/tree_leaves": float(len(leaves)),
            "spo/edges_kept": float(len(episodes)),
        })
        return episodes

    @staticmethod
    def path_blame(roots: list[TreeNode], problems: list[Problem], ctx: RolloutContext) -> dict[str, float]:
        """``lit_vine.blame`` statistics of the trees' whole responses (root-to-leaf paths), each
        token carrying its edge's advantage V(child) - V(parent) before the probability mask."""
        paths = []  # (problem, response, reward, per-token advantages)
        for root in roots:
            def descend(node: TreeNode, advantages: list[float]) -> None:
                for child in node.children:
                    here = advantages + [child.value - node.value] * len(child.segment)
                    if child.children:
                        descend(child, here)
                    else:
                        paths.append((root.problem, child.response, child.value, here))
            descend(root, [])
        if not paths:
            return {}
        advantages = pad_rows([adv for *_, adv in paths], max(1, max(len(p[1]) for p in paths)))
        texts = [ctx.tokenizer.decode(response, skip_special_tokens=True) for _, response, _, _ in paths]
        return blame_statistics([problems[p] for p, *_ in paths], [r for _, r, _, _ in paths], texts,
                                torch.tensor([v for _, _, v, _ in paths]), advantages, ctx.task, ctx.tokenizer)

    def policy_mask(self, rollouts: Rollouts) -> Tensor:
        return probability_mask(rollouts, self.prob_threshold)

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        check(len(self._advantages) == len(rollouts.response_ids), "SPOTree.advantages must follow its own sample() on the same episodes")
        edge = torch.tensor(self._advantages, device=rollouts.response_mask.device, dtype=rollouts.response_mask.dtype)
        return (edge[:, None] + kl_reward_to_go(rollouts)) * self.policy_mask(rollouts), None


@dataclass
class TreeNode:
    """A node of an SPO tree: the response so far (all segments from the root) and its last segment."""

    problem: int
    response: list[int]
    segment: list[int]
    children: list[TreeNode] = field(default_factory=list)
    leaf: bool = False
    value: float = 0.0

    def walk(self):
        """This node and its descendants, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def evaluate(self) -> float:
        """A leaf keeps its reward; any other node is worth the mean of its children's worth."""
        if self.children:
            self.value = sum(child.evaluate() for child in self.children) / len(self.children)
        return self.value


def probability_mask(rollouts: Rollouts, threshold: float) -> Tensor:
    """``(B, T)``: SPO's probability mask, the response tokens the sampling policy gave p < ``threshold``."""
    return rollouts.response_mask * (rollouts.old_logprobs.exp() < threshold)


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
    kl_rewards[torch.arange(len(last)), last] -= rollouts.scores
    return kl_rewards.flip(-1).cumsum(-1).flip(-1)


def concrete_algorithms() -> dict[str, type[Algorithm]]:
    """Every algorithm a run can name (subclasses defined anywhere included), by class name."""
    found, todo = {}, list(Algorithm.__subclasses__())
    while todo:
        cls = todo.pop(0)
        if not vars(cls).get("abstract", False):
            found[cls.__name__] = cls
        todo += cls.__subclasses__()
    return found


def spelling(name: str) -> str:
    """The case- and punctuation-free form names are matched on: ``vc-ppo``, ``VC_PPO`` and
    ``VCPPO`` are one name, as are ``dpo+`` and ``DPOPlus``."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "plus"))


def algorithm_class_name(name: str) -> str | None:
    """The class an algorithm name on the command line means, or ``None`` if it means none."""
    return next((cls for cls in concrete_algorithms() if spelling(cls) == spelling(name)), None)

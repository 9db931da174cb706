"""SPO (Guo et al. 2025): Monte Carlo values at low-probability cut points along one response
(SPO-chain) or over a tree of samples (SPO-tree), with the probability-masked objective."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lit_vine.advantages import spo_cutpoints, vine_advantages
from lit_vine.algorithms.base import Algorithm, Episode, RolloutContext
from lit_vine.algorithms.vine import kl_reward_to_go, monte_carlo_values
from lit_vine.blame import blame_statistics
from lit_vine.devices import FLOAT
from lit_vine.errors import check
from lit_vine.experience import Rollouts, pad_rows
from lit_vine.rollout.engine import SamplingParams
from lit_vine.tasks.base import Problem


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
        advantages = vine_advantages(values, ends, rollouts.scores.tolist(), T, rollouts.scores.device) + kl_reward_to_go(rollouts)
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
            room = max(1, params.max_new_tokens - depth * self.segment_tokens)  # every frontier node holds depth * M tokens
            step = params.with_(n=width, max_new_tokens=room if last else min(room, self.segment_tokens))
            sampled = ctx.engine.generate([prompts[node.problem] + node.response for node in frontier], step, seed=seed + depth)
            grown = []
            for node, segments in zip(frontier, sampled):
                for segment in segments:
                    child = TreeNode(node.problem, node.response + list(segment), segment)
                    child.leaf = last or not segment or segment[-1] == eos or len(child.response) >= params.max_new_tokens
                    node.children.append(child)
                    grown.append(child)
            # An empty frontier still calls the engine at the next depths: under FSDP or a
            # tensor-parallel engine each call is a collective, and other ranks may still be growing.
            frontier = [node for node in grown if not node.leaf]
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
        if not episodes:  # every tree all right or all wrong: one edge of advantage 0 keeps the batch (and the ranks' steps) whole
            child = roots[0].children[0]
            episodes, advantages = [Episode(roots[0].problem, prompts[roots[0].problem], child.segment, child.value)], [0.0]
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
                                torch.tensor([v for _, _, v, _ in paths], dtype=FLOAT, device="cpu"), advantages, ctx.task, ctx.tokenizer)

    def policy_mask(self, rollouts: Rollouts) -> Tensor:
        return probability_mask(rollouts, self.prob_threshold)

    def advantages(self, rollouts: Rollouts, ctx: RolloutContext) -> tuple[Tensor, None]:
        check(len(self._advantages) == len(rollouts.response_ids), "SPOTree.advantages must follow its own sample() on the same episodes")
        edge = torch.tensor(self._advantages, device=rollouts.response_mask.device, dtype=FLOAT)
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

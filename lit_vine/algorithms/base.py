"""What every algorithm shares: the base class, the episode and context types, and the registry
that turns a name on the command line into a class."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from lit_vine.experience import Rollouts
from lit_vine.rollout.engine import RolloutEngine, SamplingParams
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
        """Indices of the episodes the objective trains on (all, by default), on the CPU, where the
        experience waits for its mini-batches."""
        return torch.arange(len(rollouts.scores), device="cpu")

    def policy_mask(self, rollouts: Rollouts) -> Tensor | None:
        """``(B, T)``: the response tokens the policy loss and whitening use; ``None``: all of them."""
        return None


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

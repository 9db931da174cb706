"""Batches of experience and the stream that turns one RL iteration into mini-batches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from lit_vine.devices import FLOAT
from lit_vine.errors import check

from lit_vine.tasks.base import Problem


def pad_batch(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Left-pad prompts to width P and right-pad responses to width T.

    Returns ``input_ids`` ``(B, P+T)``, ``attention_mask`` ``(B, P+T)`` and ``response_mask``
    ``(B, T)``, so response token t of every row sits at column ``P + t``.
    """
    P = max(len(p) for p in prompts)
    T = max(1, max(len(r) for r in responses))
    input_ids = torch.full((len(prompts), P + T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    response_mask = torch.zeros(len(prompts), T, dtype=FLOAT)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        input_ids[b, P - len(p) : P + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attention_mask[b, P - len(p) : P + len(r)] = 1
        response_mask[b, : len(r)] = 1
    return input_ids, attention_mask, response_mask


def pad_rows(rows: list[list[float]], width: int) -> Tensor:
    """Per-token values of ragged rows, right-padded with 0 to ``(len(rows), width)``, fp32 on the CPU."""
    out = torch.zeros(len(rows), width, dtype=FLOAT, device="cpu")
    for b, values in enumerate(rows):
        out[b, : len(values)] = torch.tensor(values, dtype=out.dtype, device=out.device)
    return out


def position_ids(attention_mask: Tensor) -> Tensor:
    """Positions that skip left padding, as ``generate`` uses them, so scores match sampling."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Rollouts:
    """One iteration's sampled episodes before advantages: B responses to the prompts' problems."""

    problems: list[Problem]  # (B,) the problem of each episode
    group: Tensor  # (B,) prompt index; responses to the same prompt share it
    prompt_ids: list[list[int]]
    response_ids: list[list[int]]  # ends with EOS when the model stopped by itself
    texts: list[str]  # decoded responses
    scores: Tensor  # (B,) task reward R
    input_ids: Tensor  # (B, P+T)
    attention_mask: Tensor  # (B, P+T)
    response_mask: Tensor  # (B, T)
    old_logprobs: Tensor  # (B, T) behaviour policy, temperature-scaled
    ref_logprobs: Tensor  # (B, T) frozen reference
    token_rewards: Tensor  # (B, T) R on the last token, minus beta*KL per token if KL is a reward
    values: Tensor | None = None  # (B, T) critic's V(s_t), state before token t


@dataclass
class Experience:
    """What a PPO mini-batch trains on. B episodes, prompts left-padded to P, responses to T."""

    input_ids: Tensor  # (B, P+T)
    attention_mask: Tensor  # (B, P+T)
    response_mask: Tensor  # (B, T)
    old_logprobs: Tensor  # (B, T)
    ref_logprobs: Tensor  # (B, T)
    advantages: Tensor  # (B, T)
    returns: Tensor  # (B, T) critic targets; zeros without a critic
    old_values: Tensor  # (B, T) critic values at sampling time; zeros without a critic
    policy_mask: Tensor | None = None  # (B, T) tokens the policy loss sees; None: all response tokens

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def loss_mask(self) -> Tensor:
        """``(B, T)``: the tokens the policy loss, its KL term and advantage whitening use."""
        return self.response_mask if self.policy_mask is None else self.policy_mask

    @property
    def prompt_width(self) -> int:
        return self.input_ids.shape[1] - self.response_mask.shape[1]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Experience:
        present = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return Experience(**{name: x.to(device, non_blocking=non_blocking) for name, x in present.items()})

    def padded_to(self, rows: int, filler: Experience) -> Experience:
        """This experience with copies of ``filler``'s rows appended up to ``rows``, their masks all
        zero: they take part in every forward and backward (and so in a strategy's collectives,
        which every rank must run as often as the others) and in nothing else. No token of theirs
        enters a loss, a whitening statistic or a metric."""
        missing = rows - len(self)
        if missing <= 0:
            return self
        check(len(filler) > 0, "padding experience needs at least one filler row")
        repeats = filler.select(torch.arange(missing, device="cpu") % len(filler))
        silent = replace(repeats, response_mask=torch.zeros_like(repeats.response_mask),
                         policy_mask=None if repeats.policy_mask is None else torch.zeros_like(repeats.policy_mask))
        return silent if len(self) == 0 else concatenate([self, silent])

    def select(self, rows: Tensor) -> Experience:
        """Rows ``rows``, with columns that are padding in all of them cut away."""
        present = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(rows) == 0:
            return Experience(**{name: getattr(self, name)[rows] for name in present})
        P = self.prompt_width
        attention = self.attention_mask[rows]
        left = int(attention[:, :P].sum(0).nonzero()[0]) if P else 0
        T = max(1, int(self.response_mask[rows].sum(-1).max()))
        out = {}
        for name in present:
            x = getattr(self, name)[rows]
            out[name] = x[:, left : P + T] if x.shape[1] == self.input_ids.shape[1] else x[:, :T]
        return Experience(**out)


def concatenate(parts: list[Experience]) -> Experience:
    """The rows of ``parts`` in one experience: prompts left-padded, responses right-padded to the
    widest (padding is 0 everywhere, attention included)."""
    P, T = max(e.prompt_width for e in parts), max(e.response_mask.shape[1] for e in parts)
    out = {}
    for f in fields(Experience):
        values = [getattr(e, f.name) for e in parts]
        if values[0] is None:
            out[f.name] = None
            continue
        padded = []
        for e, x in zip(parts, values):
            whole = x.shape[1] == e.input_ids.shape[1]  # prompt + response columns, else response only
            left, right = (P - e.prompt_width if whole else 0), T - e.response_mask.shape[1]
            padded.append(torch.nn.functional.pad(x, (left, right)))
        out[f.name] = torch.cat(padded)
    return Experience(**out)


class MiniBatch:
    """One mini-batch of experience as the stream yields it to the training loop.

    Deliberately not a dataclass or a collection: Lightning's precision plugins for ``bf16-true``
    and DeepSpeed cast every float tensor of a batch they can see to bf16 before the training step,
    which would round the old and reference log-probs and the advantages to 8 bits (and a mask
    summed in bf16 counts 301 tokens as 300). Lightning moves it to the device with :meth:`to`.
    """

    def __init__(self, experience: Experience) -> None:
        self.experience = experience

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MiniBatch:
        return MiniBatch(self.experience.to(device, non_blocking=non_blocking))


class ExperienceStream(IterableDataset):
    """One pass = one RL iteration: ``ppo_epochs`` shuffled passes of ``num_mini_batches``
    mini-batches over the experience the rollout callback loaded for this iteration.

    Lightning calls ``iter()`` once per epoch, so one Lightning epoch is one RL iteration.
    ``unit`` consecutive rows stay together (2 for DPO's chosen/rejected pairs). When the
    experience has fewer units than mini-batches (RestEM keeps only correct answers), fewer,
    smaller mini-batches are yielded.
    """

    def __init__(self, num_mini_batches: int, ppo_epochs: int, shuffle_seed: Callable[[], int], unit: int = 1) -> None:
        self.num_mini_batches, self.ppo_epochs = num_mini_batches, ppo_epochs
        self.shuffle_seed, self.unit = shuffle_seed, unit
        self._loaded: tuple[Experience, int] | None = None

    def load(self, experience: Experience, skip: int = 0) -> None:
        """This iteration's experience; after a mid-iteration resume, ``skip`` mini-batches of it
        were already trained on (the same shuffles are drawn; those are skipped)."""
        self._loaded = (experience, skip)

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def __len__(self) -> int:
        return self.ppo_epochs * self.num_mini_batches

    def __iter__(self) -> Iterator[MiniBatch]:
        if self._loaded is None:
            raise RuntimeError("no experience for this RL iteration: trainer.callbacks needs a lit_vine.RolloutCallback (it makes it)")
        (experience, skip), self._loaded = self._loaded, None
        generator = torch.Generator().manual_seed(self.shuffle_seed())
        units = len(experience) // self.unit
        if units == 0:
            return
        for _ in range(self.ppo_epochs):
            order = torch.randperm(units, generator=generator)
            for chosen in order.tensor_split(min(self.num_mini_batches, units)):
                if skip:
                    skip -= 1
                    continue
                rows = (chosen[:, None] * self.unit + torch.arange(self.unit)).flatten()
                yield MiniBatch(experience.select(rows))


def num_mini_batches(episodes: int, mini_batch_size: int) -> int:
    return max(1, math.ceil(episodes / mini_batch_size))

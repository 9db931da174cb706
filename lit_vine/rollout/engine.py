"""The rollout-engine interface and the transformers engine that runs everywhere (CPU included)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 64
    n: int = 1

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")

    def with_(self, **changes) -> SamplingParams:
        return replace(self, **changes)


class RolloutEngine(ABC):
    """Turns prompts (token ids) into sampled completions (token ids).

    The trainer calls :meth:`setup` once with its policy, :meth:`sync_weights` after every policy
    update, and :meth:`generate` for training rollouts, Monte Carlo value rollouts and evaluation.
    """

    def setup(self, policy: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.policy, self.tokenizer = policy, tokenizer

    def sync_weights(self, policy: PreTrainedModel) -> None:
        """Make the engine sample from ``policy``'s current weights."""

    def sleep(self) -> None:
        """Training is about to use the accelerator: release memory held for generation (vLLM sleep
        mode). The engine wakes itself at its next ``generate`` or ``sync_weights``."""

    def metrics(self) -> dict[str, float]:
        """Engine statistics to log after a weight sync (e.g. the vLLM weight-sync probe)."""
        return {}

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[list[int]]]:
        """``params.n`` completions per prompt: ``out[i][j]`` is the j-th completion of prompt i.

        A completion ends with the EOS token when the model stopped by itself; one that ran out of
        ``max_new_tokens`` has no EOS. ``seed`` makes the draw reproducible.
        """


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under a fixed torch seed, leaving the caller's RNG streams untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class HFEngine(RolloutEngine):
    """Batched, KV-cached sampling with ``transformers``' ``generate`` on the live policy.

    Args:
        batch_size: sequences generated together (prompts x n); bounds memory.
    """

    def __init__(self, batch_size: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"HFEngine.batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[list[int]]]:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        device = next(self.policy.parameters()).device
        # Similar lengths together keep left padding short.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_call = max(1, self.batch_size // params.n)
        out: list[list[list[int]]] = [[] for _ in prompts]
        was_training = self.policy.training
        self.policy.eval()
        with seeded(seed):
            for start in range(0, len(order), per_call):
                chunk = order[start : start + per_call]
                width = max(len(prompts[i]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for row, i in enumerate(chunk):
                    ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
                    mask[row, width - len(prompts[i]) :] = 1
                sampled = self.policy.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=params.temperature > 0,
                    temperature=params.temperature if params.temperature > 0 else None,
                    top_p=params.top_p if params.temperature > 0 else None,
                    top_k=None,
                    max_new_tokens=params.max_new_tokens,
                    num_return_sequences=params.n,
                    eos_token_id=eos,
                    pad_token_id=pad,
                ).tolist()
                for row, seq in enumerate(sampled):
                    completion = seq[width:]
                    if eos in completion:
                        completion = completion[: completion.index(eos) + 1]
                    out[chunk[row // params.n]].append(completion)
        self.policy.train(was_training)
        return out

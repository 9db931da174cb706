"""The rollout-engine interface and the transformers engine that runs everywhere (CPU included)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor
from transformers import DynamicCache, DynamicLayer, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, TemperatureLogitsWarper, TopPLogitsWarper

from lit_vine.devices import activation_dtype, memory_budget_gib
from lit_vine.distributed import full_weights
from lit_vine.experience import position_ids


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding. ``max_total_tokens`` bounds
    prompt + completion below the model's context (``None``: the context alone)."""

    temperature: float = 0.6
    top_p: float = 0.9
    max_new_tokens: int = 64
    n: int = 1
    max_total_tokens: int | None = None
    logprobs: bool = False  # ask for each token's log-prob (Completion.logprobs); not every engine has them

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.n < 1:
            raise ValueError(f"max_new_tokens and n must be >= 1, got {self.max_new_tokens}, {self.n}")

    def with_(self, **changes) -> SamplingParams:
        return replace(self, **changes)


class Completion(list):
    """A sampled completion: its token ids (it is the list) and ``logprobs``, each token's
    log-probability under softmax(logits / temperature) of the policy that sampled it, before top-p
    (what PPO scores), when the request asked for them and the engine has them; else ``None``."""

    logprobs: list[float] | None = None


class RolloutEngine(ABC):
    """Turns prompts (token ids) into sampled completions (token ids).

    ``lit_vine.RolloutCallback`` owns the engine: it calls :meth:`setup` with the policy,
    :meth:`generate` for training rollouts, Monte Carlo value rollouts and evaluation,
    :meth:`sleep` while the trainer trains, :meth:`sync_weights` after every iteration's updates
    and :meth:`close` at the end.
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

    def close(self) -> None:
        """Release what the engine holds (the trainer is done with it); a later call rebuilds it."""

    @abstractmethod
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[list[int]]]:
        """``params.n`` completions per prompt: ``out[i][j]`` is the j-th completion of prompt i.

        A completion ends with the EOS token when the model stopped by itself; one that ran out of
        ``max_new_tokens`` (or of the model's context or ``max_total_tokens``, which bound every
        request) has no EOS.
        ``seed`` makes the draw reproducible.
        """


@contextlib.contextmanager
def seeded(seed: int):
    """Run a block under a fixed torch seed, leaving the caller's RNG streams untouched."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class HFEngine(RolloutEngine):
    """Batched, KV-cached sampling with a ``transformers`` model: the live policy, on any device.

    ``decoding="fork"`` (default) prefills each prompt once and forks its KV cache to its ``n``
    samples (VinePPO's K continuations of a state share all of the state), then decodes with the
    rows that finished taken out of the batch; sampling is transformers' own (temperature, then
    top-p), so the distribution is ``generate``'s. ``decoding="generate"`` calls ``generate`` on
    ``n`` copies of every prompt, decoding each chunk until its longest row ends.

    Prompts are decoded in chunks whose KV cache fits ``kv_cache_gib`` (a 7B model's cache takes
    480 KiB a token: reserving a whole Monte Carlo batch at once would ask for hundreds of GB).
    Under FSDP or ZeRO-3 the policy's weights are gathered once per call and decoding runs no
    collective (``lit_vine.distributed.full_weights``); every rank must call as often.

    Args:
        batch_size: sequences decoded together (prompts x n), at most.
        decoding: ``fork`` or ``generate``.
        kv_cache_gib: KV cache one chunk may reserve; ``None``: 30 % of the GPU's free memory at
            the call, 4 GiB on a CPU.
        sync_every: the fork decoder reads back from the device (how many rows are still going)
            once every this many tokens, not at every token: on a GPU each read stalls the queue.
    """

    def __init__(
        self, batch_size: int = 256, decoding: Literal["fork", "generate"] = "fork", kv_cache_gib: float | None = None, sync_every: int = 8
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"HFEngine.batch_size must be >= 1, got {batch_size}")
        if decoding not in ("fork", "generate"):
            raise ValueError(f"HFEngine.decoding must be 'fork' or 'generate', got {decoding!r}")
        if kv_cache_gib is not None and kv_cache_gib <= 0:
            raise ValueError(f"HFEngine.kv_cache_gib must be > 0 or null, got {kv_cache_gib}")
        if sync_every < 1:
            raise ValueError(f"HFEngine.sync_every must be >= 1, got {sync_every}")
        self.batch_size, self.decoding, self.kv_cache_gib, self.sync_every = batch_size, decoding, kv_cache_gib, sync_every

    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one token takes: keys and values of every layer, in the dtype the
        forward computes in (bf16 under autocast)."""
        config = self.policy.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return 2 * config.num_hidden_layers * heads * head_dim * activation_dtype(self.policy).itemsize

    def _chunks(self, prompts: list[list[int]], params: SamplingParams, device: torch.device) -> list[tuple[list[int], int]]:
        """Prompt indices generated together, with their number of new tokens: similar lengths
        together keep left padding short; a prompt near the end of the context gets what is left;
        a chunk holds at most ``batch_size`` sequences and its KV cache fits the memory budget."""
        limits = [getattr(self.policy.config, "max_position_embeddings", None), params.max_total_tokens]
        context = min((n for n in limits if n is not None), default=None)
        budget = [params.max_new_tokens if context is None else min(params.max_new_tokens, context - len(p)) for p in prompts]
        per_call = max(1, self.batch_size // params.n)
        gib = self.kv_cache_gib if self.kv_cache_gib is not None else memory_budget_gib(device)
        max_tokens = gib * 2**30 / self.kv_bytes_per_token()  # cached tokens a chunk may reserve
        chunks: list[tuple[list[int], int]] = []
        for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):  # the newest prompt is the chunk's longest
            fits = chunks and (len(chunks[-1][0]) + 1) * params.n * (len(prompts[i]) + budget[i]) <= max_tokens
            if fits and chunks[-1][1] == budget[i] and len(chunks[-1][0]) < per_call:
                chunks[-1][0].append(i)
            else:
                chunks.append(([i], budget[i]))
        return chunks

    @torch.no_grad()  # not inference_mode: FSDP cannot run under it
    def generate(self, prompts: list[list[int]], params: SamplingParams, seed: int) -> list[list[list[int]]]:
        device = next(self.policy.parameters()).device
        out: list[list[list[int]]] = [[] for _ in prompts]
        was_training = self.policy.training
        self.policy.eval()
        decode = self._fork if self.decoding == "fork" else self._generate
        with seeded(seed), full_weights(self.policy):
            for chunk, max_new_tokens in self._chunks(prompts, params, device):
                if max_new_tokens < 1:  # the prompt fills the context: nothing can follow
                    completions = [[] for _ in range(len(chunk) * params.n)]
                else:
                    ids, mask = left_padded([prompts[i] for i in chunk], self.tokenizer.pad_token_id, device)
                    completions = decode(ids, mask, params, max_new_tokens)
                for row, completion in enumerate(completions):
                    out[chunk[row // params.n]].append(completion)
        self.policy.train(was_training)
        return out

    def _generate(self, ids: Tensor, mask: Tensor, params: SamplingParams, max_new_tokens: int) -> list[list[int]]:
        """``n`` completions of each row (row-major) with transformers' ``generate``."""
        eos = self.tokenizer.eos_token_id
        sampled = self.policy.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=params.temperature > 0,
            temperature=params.temperature if params.temperature > 0 else None,
            top_p=params.top_p if params.temperature > 0 else None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            num_return_sequences=params.n,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )[:, ids.shape[1] :].tolist()
        return [seq[: seq.index(eos) + 1] if eos in seq else seq for seq in sampled]

    def _fork(self, ids: Tensor, mask: Tensor, params: SamplingParams, max_new_tokens: int) -> list[list[int]]:
        """``n`` completions of each row (row-major): one prefill per row, its KV cache forked to
        the ``n`` samples; rows that emitted EOS leave the batch once a quarter of it is done. With
        ``params.logprobs`` each token's log-prob comes along: the live policy's own, so PPO's
        old-policy forward can be skipped.

        Sampled tokens and log-probs stay on the device until the end; the loop reads back only how
        many rows are still going, once every ``sync_every`` tokens (a finished row decodes on in
        between; what it writes after its EOS is cut off)."""
        eos, n = self.tokenizer.eos_token_id, params.n
        with_logprobs = params.logprobs and params.temperature > 0
        cache = DynamicCache(config=self.policy.config)
        logits = self.policy(
            input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), past_key_values=cache, use_cache=True, logits_to_keep=1
        ).logits[:, -1]
        reserve(cache, repeats=n, extra=max_new_tokens)  # the fork, into room for every new token
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        B, device = len(mask), ids.device
        rows = torch.arange(B, device=device)  # the output row of each batch row
        alive = torch.ones(B, dtype=torch.bool, device=device)
        sampled = torch.zeros(B, max_new_tokens, dtype=torch.long, device=device)
        logprobs = torch.zeros(B, max_new_tokens, dtype=torch.float32, device=device)
        lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)  # a row without EOS runs to the end
        position = mask.sum(-1, keepdim=True)  # the next token's position
        warpers = LogitsProcessorList() if params.temperature == 0 else LogitsProcessorList(
            [TemperatureLogitsWarper(params.temperature), TopPLogitsWarper(params.top_p)]
        )
        for step in range(max_new_tokens):
            scores = warpers(None, logits.float())
            tokens = scores.argmax(-1) if params.temperature == 0 else torch.multinomial(scores.softmax(-1), 1)[:, 0]
            sampled[rows, step] = tokens
            if with_logprobs:
                logprobs[rows, step] = torch.log_softmax(logits.float() / params.temperature, -1).gather(-1, tokens[:, None])[:, 0]
            ended = alive & (tokens == eos)
            lengths[rows] = torch.where(ended, step + 1, lengths[rows])
            alive &= ~ended
            if step == max_new_tokens - 1:
                break
            if (step + 1) % self.sync_every == 0:
                going = int(alive.sum())  # the one read-back
                if going == 0:
                    break
                if (len(alive) - going) * 4 >= len(alive):  # a quarter of the rows are done: drop them (a copy of the cache)
                    keep = alive.nonzero()[:, 0]
                    cache.batch_select_indices(keep)
                    rows, tokens, mask, position, alive = rows[keep], tokens[keep], mask[keep], position[keep], alive[keep]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], -1)
            logits = self.policy(input_ids=tokens[:, None], attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True).logits[:, -1]
            position = position + 1
        completions = []
        for tokens_row, logprobs_row, length in zip(sampled.tolist(), logprobs.tolist() if with_logprobs else [None] * B, lengths.tolist()):
            completion = Completion(tokens_row[:length])
            if with_logprobs:
                completion.logprobs = logprobs_row[:length]
            completions.append(completion)
        return completions


class _ReservedLayer(DynamicLayer):
    """A KV cache layer that writes new tokens into room reserved for them, instead of copying the
    whole cache into a longer tensor at every step as ``DynamicLayer`` does."""

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        end = self.length + key_states.shape[-2]
        self.key_room[..., self.length : end, :] = key_states
        self.value_room[..., self.length : end, :] = value_states
        self.length = end
        self.keys, self.values = self.key_room[..., :end, :], self.value_room[..., :end, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: Tensor) -> None:
        self.key_room, self.value_room = self.key_room[indices], self.value_room[indices]
        self.keys, self.values = self.key_room[..., : self.length, :], self.value_room[..., : self.length, :]


def reserve(cache: DynamicCache, repeats: int, extra: int) -> None:
    """Repeat every row of a prefilled cache ``repeats`` times (the fork) into layers with room
    for ``extra`` more tokens."""
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:  # sliding-window or other layers: plain repeat
            layer.batch_repeat_interleave(repeats)
            continue
        B, H, L, D = layer.keys.shape
        key_room = layer.keys.new_empty(B * repeats, H, L + extra, D)
        value_room = layer.values.new_empty(B * repeats, H, L + extra, D)
        key_room[..., :L, :] = layer.keys.repeat_interleave(repeats, 0)
        value_room[..., :L, :] = layer.values.repeat_interleave(repeats, 0)
        layer.__class__ = _ReservedLayer
        layer.key_room, layer.value_room, layer.length = key_room, value_room, L
        layer.keys, layer.values = key_room[..., :L, :], value_room[..., :L, :]


def left_padded(prompts: list[list[int]], pad: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Prompts left-padded to one width: ``input_ids`` and ``attention_mask``, both ``(B, P)``."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    return ids.to(device), mask.to(device)

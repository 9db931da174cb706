"""Loading policies and critics: hub names, local folders, or the offline ``builtin:tiny`` model."""

from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from lit_vine.devices import TRAINABLE_DTYPE
from lit_vine.tasks.arithmetic import ArithmeticTask

BUILTIN_TINY = "builtin:tiny"


@dataclass
class TinyConfig:
    """Size of the offline Llama-architecture policy built by ``builtin:tiny``."""

    vocab_size: int = 384
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    max_position_embeddings: int = 256
    seed: int = 0


def build_tokenizer(vocab_size: int, corpus: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``corpus``; digits are always single tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_tiny(config: TinyConfig) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A freshly initialised tiny Llama and its tokenizer, built without any download."""
    task = ArithmeticTask(num_train=5000, num_validation=0, num_test=0, seed=config.seed)
    corpus = [task.prompt(p) + p.solution for p in task.problems("train")]
    tokenizer = build_tokenizer(config.vocab_size, corpus)
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=4 * config.hidden_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=config.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
    )
    return model, tokenizer


def load_policy_and_tokenizer(name: str, tiny: TinyConfig | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A causal LM to train, in fp32 whatever dtype it was saved in (``lit_vine.devices``), and its
    tokenizer, by hub name or local folder; ``builtin:tiny`` builds a fresh offline one of size ``tiny``."""
    if name == BUILTIN_TINY:
        return build_tiny(tiny or TinyConfig())
    tokenizer = _from_pretrained(AutoTokenizer, name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _from_pretrained(AutoModelForCausalLM, name, dtype=TRAINABLE_DTYPE), tokenizer


def load_frozen_copy(name: str, policy: PreTrainedModel) -> PreTrainedModel:
    """The frozen reference for a policy loaded from ``name``: a second load in the checkpoint's own
    dtype (half the memory of a copy of the fp32 policy, for a bf16 checkpoint) or, for the
    ``builtin:tiny`` policy, which exists only in memory, a copy of it."""
    model = copy.deepcopy(policy) if name == BUILTIN_TINY else _from_pretrained(AutoModelForCausalLM, name)
    return model.eval().requires_grad_(False)


def _from_pretrained(auto_class, name: str, **kwargs):
    """``from_pretrained`` with an error that says which name failed and why.

    A name whose first path component is a local folder (``checkpoints/x``) or that starts like a
    path is never sent to the hub, so a typo in a local path is not reported as a network error.
    """
    looks_local = name.startswith((".", "/", "~")) or os.path.isdir(name.split("/", 1)[0]) or name.count("/") > 1
    if looks_local and not os.path.isdir(os.path.expanduser(name)):
        raise FileNotFoundError(f"model checkpoint folder not found: {name!r}")
    try:
        return auto_class.from_pretrained(os.path.expanduser(name), **kwargs)
    except OSError as err:
        raise FileNotFoundError(f"cannot load {name!r}: not a local folder, and the hub said: {err}") from err


def enable_activation_checkpointing(model: nn.Module) -> None:
    """Recompute every decoder layer's activations during backward instead of storing them.

    Non-reentrant checkpointing: correct when a layer's inputs need no grad (frozen embeddings).
    """
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name in recent transformers
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def output_head(model: nn.Module) -> nn.Module:
    """The layer that turns a model's last hidden states into its outputs: a causal LM's LM head,
    a critic's value head."""
    return model.head if isinstance(model, ValueModel) else model.get_output_embeddings()


@contextlib.contextmanager
def head_only_at(model: nn.Module, index: torch.Tensor):
    """Within the block, ``model``'s output head runs only at ``index`` ``(B, C)``: flat positions
    into the ``(rows * length)`` hidden states of the forward, so the output is ``(B, C, ...)``.

    Scoring T response tokens then computes T columns of logits per episode, not one per prompt
    token too (``B x P x V`` floats, dropped at once: 1.5 GB for 16 GSM8K episodes of a 32k
    vocabulary). A forward pre-hook on the head: the model's forward, and the hooks of any wrapper
    around it (FSDP), run unchanged."""

    def gather(head: nn.Module, args: tuple) -> tuple:
        hidden, *rest = args
        return (hidden.flatten(0, 1)[index], *rest)

    handle = output_head(model).register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


class ValueModel(nn.Module):
    """Critic: the policy's transformer body with a linear value head on the last hidden state."""

    def __init__(self, name: str, tiny: TinyConfig | None = None) -> None:
        super().__init__()
        if name == BUILTIN_TINY:
            self.body = build_tiny(tiny or TinyConfig())[0].model
        else:
            self.body = _from_pretrained(AutoModel, name, dtype=TRAINABLE_DTYPE)
        hidden = self.body.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, position_ids: torch.Tensor, use_cache: bool = False) -> torch.Tensor:
        """Values ``(B, L)``: the value of the state that ends at each position."""
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=use_cache).last_hidden_state
        return self.head(hidden).squeeze(-1)

"""Memory fit for real sizes: what the largest tensors are, counted op by op on CPU.

With a 32,000-entry vocabulary a logit row is 128 KB in fp32: computing logits for prompt columns
that are dropped at once, or an entropy nothing reads, costs gigabytes at GSM8K lengths. These
tests record every operator's output (``TorchDispatchMode``) and bound the vocabulary-wide ones.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import REPO
from lit_vine import GRPO, RLModule
from lit_vine.experience import pad_batch
from lit_vine.rollout import engine as engine_module
from lit_vine.rollout.engine import HFEngine, SamplingParams

SFT = str(REPO / "checkpoints" / "sft-arith")


class VocabularyWide(TorchDispatchMode):
    """Records (op, rows) of every operator output whose last dimension is the vocabulary (the LM
    head's transposed weight, a view, is not an output of the forward's work)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.seen = vocab, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab and func.__name__.split(".")[0] != "t":
                self.seen.append((func.__name__.split(".")[0], t.numel() // self.vocab))
        return out


@pytest.fixture(scope="module")
def module():
    return RLModule(policy=SFT, algorithm=GRPO(), micro_batch_size=64)


def long_prompt_batch(module, rows: int = 6):
    """Episodes whose prompts are much longer than their responses, as in GSM8K or MATH."""
    tok = module.tokenizer
    prompt = tok("Compute 12 +7 *3 -5 +8 *2 -6 +9 from left to right. " * 3).input_ids
    responses = [tok(f"#### {i}", add_special_tokens=False).input_ids + [tok.eos_token_id] for i in range(rows)]
    return pad_batch([prompt] * rows, responses, tok.pad_token_id)


@pytest.mark.parametrize("packing", [True, False])
def test_scoring_computes_logits_for_response_columns_only_and_no_entropy(module, packing):
    module.packing = packing
    input_ids, attention_mask, response_mask = long_prompt_batch(module)
    B, T = response_mask.shape
    vocab = module.policy.config.vocab_size
    with VocabularyWide(vocab) as record:
        module.score_tokens(input_ids, attention_mask, response_mask)
    rows = max(n for _, n in record.seen)
    assert rows <= B * T, f"a vocabulary-wide tensor of {rows} rows for {B} x {T} response tokens: prompt columns got logits"
    ops = {op for op, _ in record.seen}
    assert not ops & {"exp", "mul", "neg"}, f"scoring computed an entropy ({sorted(ops)})"


def test_sampling_computes_no_logits_for_prompt_columns(module):
    engine = HFEngine()
    engine.setup(module.policy, module.tokenizer)
    input_ids, _, _ = long_prompt_batch(module, rows=1)
    prompts = [input_ids[0, :-3].tolist(), input_ids[0, 5:-3].tolist()]
    with VocabularyWide(module.policy.config.vocab_size) as record:
        engine.generate(prompts, SamplingParams(max_new_tokens=4, n=3), seed=0)
    assert max(n for _, n in record.seen) <= len(prompts) * 3, "the prefill computed logits for every prompt token"


def test_the_kv_cache_of_a_chunk_fits_its_budget(module, monkeypatch):
    """A chunk reserves (rows x n) x (longest prompt + new tokens) cached tokens; with a budget that
    holds a few rows, prompts go in several chunks, and greedy completions do not change."""
    reserved, reserve = [], engine_module.reserve

    def recording(cache, repeats, extra):
        reserve(cache, repeats, extra)
        layer = cache.layers[0]
        reserved.append(len(cache.layers) * 2 * layer.key_room.numel() * layer.key_room.element_size())

    monkeypatch.setattr(engine_module, "reserve", recording)
    tok = module.tokenizer
    prompts = [tok(f"Compute {i} +{i + 3} *2 from left to right.").input_ids for i in range(12)]
    params = SamplingParams(temperature=0.0, max_new_tokens=16, n=2)
    budgeted = HFEngine(kv_cache_gib=1e-3)  # 1 MiB
    budgeted.setup(module.policy, tok)
    small = budgeted.generate(prompts, params, seed=0)
    assert len(reserved) > 1 and max(reserved) <= 2**20, reserved
    reserved.clear()
    whole = HFEngine(kv_cache_gib=1.0)
    whole.setup(module.policy, tok)
    assert whole.generate(prompts, params, seed=0) == small
    assert len(reserved) == 1


def test_each_phase_logs_its_peak_memory(tmp_path):
    from lightning import Trainer

    from lit_vine import ArithmeticTask, TaskDataModule
    from lit_vine.evaluation import EvalConfig

    module = RLModule(policy=SFT, algorithm=GRPO(), responses_per_prompt=2, max_new_tokens=24, mini_batch_size=8, micro_batch_size=8,
                      ppo_epochs=1, evaluation=EvalConfig(num_samples=0))
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, TaskDataModule(ArithmeticTask(num_train=16, num_validation=2, num_test=2), prompts_per_iteration=4))
    for phase in ("generation", "scoring", "advantages", "training"):
        value = float(trainer.logged_metrics[f"memory/{phase}_gib"])
        assert 0.05 < value < 64, f"memory/{phase}_gib = {value}: not a peak resident set of this process"

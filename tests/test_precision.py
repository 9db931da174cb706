"""Precision as the peers keep it (lit_vine.devices): fp32 master weights whatever the checkpoint's
dtype, the reference in the compute dtype, experience made in the trainer's precision context.

Real checkpoints are bf16 (RhoMath, DeepSeekMath, Qwen on the hub), and transformers loads a
checkpoint in the dtype it was saved in. These tests save the shipped tiny SFT policy in bf16 and
train from it on CPU; Lightning's ``bf16-mixed`` runs as CPU autocast.
"""

from __future__ import annotations

import pytest
import torch
from lightning import Trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

import lit_vine.rl as rl
from conftest import REPO
from lit_vine import GRPO, PPO, ArithmeticTask, RLModule, SFTModule, TaskDataModule, VinePPO
from lit_vine.evaluation import EvalConfig
from lit_vine.schedule import LRSchedule

SFT = str(REPO / "checkpoints" / "sft-arith")


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory) -> str:
    """The shipped SFT policy saved in bf16, as hub checkpoints are."""
    folder = tmp_path_factory.mktemp("bf16-checkpoint")
    AutoModelForCausalLM.from_pretrained(SFT).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(SFT).save_pretrained(folder)
    assert AutoModelForCausalLM.from_pretrained(folder).dtype == torch.bfloat16  # what transformers does by default
    return str(folder)


def dtypes(model: torch.nn.Module) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


def fit(module: RLModule, precision: str = "bf16-mixed", iterations: int = 1, prompts: int = 8) -> Trainer:
    """One short run, nothing written (no logger, checkpoint or validation)."""
    torch.manual_seed(0)
    data = TaskDataModule(ArithmeticTask(num_train=64, num_validation=4, num_test=4), prompts_per_iteration=prompts)
    trainer = Trainer(max_epochs=iterations, accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, data)
    return trainer


def settings(**overrides) -> dict:
    return dict(responses_per_prompt=4, max_new_tokens=40, mini_batch_size=32, micro_batch_size=8, ppo_epochs=1,
                evaluation=EvalConfig(num_samples=0), **overrides)


def test_a_bf16_checkpoint_loads_fp32_trainable_weights(bf16_checkpoint):
    saved = AutoModelForCausalLM.from_pretrained(bf16_checkpoint)
    module = RLModule(policy=bf16_checkpoint, algorithm=PPO())
    assert dtypes(module.policy) == {torch.float32} and dtypes(module.critic) == {torch.float32}
    for (name, p), (_, q) in zip(module.policy.named_parameters(), saved.named_parameters()):
        assert torch.equal(p, q.float()), f"{name}: the fp32 master weights are the checkpoint's, exactly"
    assert dtypes(SFTModule(policy=bf16_checkpoint).policy) == {torch.float32}


def test_one_iteration_at_lr_1e6_moves_almost_every_weight(bf16_checkpoint):
    """The paper's learning rate: an update of ~1e-6 on a weight of ~0.05 vanishes in bf16 (8 bits
    of mantissa) but not in fp32. 28070cc trained the bf16 weights and moved 0.17 % of them."""
    module = RLModule(policy=bf16_checkpoint, algorithm=GRPO(), learning_rate=1e-6, lr_schedule=LRSchedule(), **settings())
    before = module.policy.model.layers[0].self_attn.q_proj.weight.detach().clone()
    fit(module)
    after = module.policy.model.layers[0].self_attn.q_proj.weight.detach()
    moved = float((after != before).float().mean())
    assert moved > 0.99, f"only {moved:.2%} of q_proj's entries changed"


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_ppo_with_a_critic_trains_from_a_bf16_checkpoint(bf16_checkpoint, precision):
    module = RLModule(policy=bf16_checkpoint, algorithm=PPO(), learning_rate=1e-5, **settings())
    head = module.critic.head.weight.detach().clone()
    trainer = fit(module, precision)
    assert trainer.global_step > 0 and not torch.equal(head, module.critic.head.weight)
    assert dtypes(module.policy) == dtypes(module.critic) == {torch.float32}


@pytest.mark.parametrize("algorithm", [GRPO(), VinePPO(num_mc_rollouts=2)], ids=["GRPO", "VinePPO"])
def test_the_first_mini_batch_has_ratio_one_under_bf16_mixed(algorithm, monkeypatch):
    """Old log-probs made in the trainer's precision context, by the loss's own forward: before the
    first update, new and old log-probs are the same numbers. (28070cc made them outside autocast:
    they differed by up to ~6e-2 from the loss's bf16 forward on this run.)"""
    differences, loss = [], rl.ppo_policy_loss

    def recording(logprobs, old_logprobs, advantages, mask, *args):
        differences.append(float(((logprobs.detach() - old_logprobs) * mask).abs().max()))
        return loss(logprobs, old_logprobs, advantages, mask, *args)

    monkeypatch.setattr(rl, "ppo_policy_loss", recording)
    module = RLModule(policy=SFT, algorithm=algorithm, learning_rate=1e-5, **settings())
    fit(module, "bf16-mixed")
    first_mini_batch = differences[: 32 // 8]  # its micro-batches all come before the first update
    assert len(first_mini_batch) == 4 and max(first_mini_batch) < 1e-6, first_mini_batch


@pytest.mark.parametrize("precision, expected", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_the_reference_lives_in_the_compute_dtype_and_trained_weights_in_fp32(bf16_checkpoint, precision, expected):
    module = RLModule(policy=bf16_checkpoint, algorithm=GRPO(), **settings())
    fit(module, precision)
    assert dtypes(module.reference) == {expected} and not any(p.requires_grad for p in module.reference.parameters())
    assert dtypes(module.policy) == {torch.float32}
    assert not any(name.startswith("reference.") for name in module.state_dict()), "the reference is not checkpointed"


def test_bf16_true_keeps_experience_and_rope_in_fp32(monkeypatch):
    """``bf16-true`` is a choice (half the memory of the weights) that casts the module, and
    Lightning's plugin casts each batch's floats to bf16 before the training step: the old and
    reference log-probs and the advantages reach the loss unrounded, and RoPE's frequencies are
    fp32 again before anything runs."""
    seen = []
    step = RLModule.training_step

    def recording(self, batch, batch_idx):
        seen.append({name: getattr(batch.experience, name).dtype for name in ("old_logprobs", "ref_logprobs", "advantages", "response_mask")})
        seen[-1]["inv_freq"] = self.policy.model.rotary_emb.inv_freq.dtype
        return step(self, batch, batch_idx)

    monkeypatch.setattr(RLModule, "training_step", recording)
    module = RLModule(policy=SFT, algorithm=GRPO(), learning_rate=1e-5, **settings())
    fit(module, "bf16-true")
    assert dtypes(module.policy) == {torch.bfloat16}
    assert seen and all(set(dtypes.values()) == {torch.float32} for dtypes in seen), seen


@pytest.mark.parametrize("precision", ["deepspeed-bf16-mixed", "bf16-true"])
def test_deepspeed_and_bf16_true_input_casts_leave_a_mini_batch_alone(precision):
    """DeepSpeed's and bf16-true's precision plugins cast every float tensor of a batch to bf16
    before the training step. Handed an ``Experience`` bare, a 301-token response would count 300
    tokens and its log-probs would lose all but 8 bits; the stream's ``MiniBatch`` passes unchanged."""
    from lightning.pytorch.plugins.precision import DeepSpeedPrecision, HalfPrecision

    from lit_vine.experience import Experience, MiniBatch, pad_batch

    plugin = DeepSpeedPrecision("bf16-mixed") if precision.startswith("deepspeed") else HalfPrecision("bf16-true")
    input_ids, attention_mask, response_mask = pad_batch([[1, 2, 3]], [list(range(4, 305))], 0)
    logprobs = -torch.rand(1, 301, generator=torch.Generator().manual_seed(0))
    experience = Experience(input_ids, attention_mask, response_mask, logprobs, logprobs - 1e-3, logprobs * 3, logprobs, logprobs)
    bare = plugin.convert_input(experience)  # what happened before: the hazard is real
    assert bare.old_logprobs.dtype == torch.bfloat16 and float(bare.response_mask.sum(-1)) == 300.0
    kept = plugin.convert_input(MiniBatch(experience)).experience
    for name in ("old_logprobs", "ref_logprobs", "advantages", "response_mask"):
        assert getattr(kept, name).dtype == torch.float32 and torch.equal(getattr(kept, name), getattr(experience, name)), name
    assert int(kept.response_mask.sum(-1)) == 301


def test_rope_frequencies_are_fp32_again_after_a_cast_to_bf16():
    """A strategy that casts the whole model (bf16-true, DeepSpeed) casts RoPE's ``inv_freq`` too:
    8 bits of frequency put the rotation at position 2,000 off by up to a radian. They are
    recomputed in fp32 (``lit_vine.devices.keep_rope_in_float32``)."""
    from lit_vine.devices import keep_rope_in_float32

    model = AutoModelForCausalLM.from_pretrained(SFT)
    rotary = model.model.rotary_emb
    positions = torch.arange(1990, 2010)[None]
    x = torch.zeros(1, 20, 8, dtype=torch.bfloat16)
    true_cos, _ = rotary(x.float(), positions)
    model.to(torch.bfloat16)
    cast_cos, _ = rotary(x, positions)
    assert (cast_cos.float() - true_cos).abs().max() > 0.2, "the cast did not hurt: the check would be vacuous"
    assert keep_rope_in_float32(model) == 1 and rotary.inv_freq.dtype == torch.float32
    fixed_cos, _ = rotary(x, positions)
    assert (fixed_cos.float() - true_cos).abs().max() < 1e-2  # bf16's rounding of cos itself, no more

"""The GPU paths on a real CUDA device (``pytest -m gpu``): skipped where there is none.

Every method through an iteration under ``bf16-mixed``; a RhoMath-1.1B-shaped model (random
weights saved in bf16, as hub checkpoints are) through a VinePPO iteration; fp32 master weights and
a ratio of 1 on the first mini-batch; a checkpoint and an exact resume. Each failure a GPU showed
also has a CPU test (tests/test_devices.py, test_precision.py, test_memory.py); these check the
same on the hardware. ``LIT_VINE_GPU_TESTS_ON_CPU=1 pytest -m gpu`` runs them on the CPU (a dry
run of the tests themselves, with a small model in place of the 1.1B one).
"""

from __future__ import annotations

import os

import pytest
import torch
from lightning import Trainer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import lit_vine.rl as rl
from conftest import REPO
from lit_vine import DPOPlus, GRPO, PPO, RLOO, VCPPO, ArithmeticTask, Reinforce, RestEM, RLModule, SPOChain, SPOTree, TaskDataModule, VinePPO
from lit_vine.checkpointing import RunCheckpoint
from lit_vine.evaluation import EvalConfig
from lit_vine.schedule import LRSchedule

SFT = str(REPO / "checkpoints" / "sft-arith")
ON_GPU = torch.cuda.is_available()
DRY_RUN = not ON_GPU and os.environ.get("LIT_VINE_GPU_TESTS_ON_CPU") == "1"
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not (ON_GPU or DRY_RUN), reason="needs a CUDA GPU (LIT_VINE_GPU_TESTS_ON_CPU=1 dry-runs these tests on the CPU)"),
]
ACCELERATOR = "gpu" if ON_GPU else "cpu"


def trainer(tmp_path, iterations: int = 1, **kwargs) -> Trainer:
    return Trainer(max_epochs=iterations, accelerator=ACCELERATOR, devices=1, precision="bf16-mixed", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path,
                   enable_checkpointing=bool(kwargs.get("callbacks")), **kwargs)


def data(prompts: int = 8) -> TaskDataModule:
    return TaskDataModule(ArithmeticTask(num_train=64, num_validation=4, num_test=4), prompts_per_iteration=prompts)


def settings(**overrides) -> dict:
    return {**dict(responses_per_prompt=4, max_new_tokens=48, mini_batch_size=16, micro_batch_size=8, ppo_epochs=1, learning_rate=1e-5,
                   lr_schedule=LRSchedule(), evaluation=EvalConfig(num_samples=0)), **overrides}


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("bf16")
    AutoModelForCausalLM.from_pretrained(SFT).to(torch.bfloat16).save_pretrained(folder)
    AutoTokenizer.from_pretrained(SFT).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    "algorithm",
    [VinePPO(num_mc_rollouts=3), PPO(), VCPPO(value_pretrain_iterations=0), GRPO(), RLOO(), Reinforce(), RestEM(), DPOPlus(),
     SPOChain(num_mc_rollouts=3, cutpoint_interval=2), SPOTree(branching=[2, 2], segment_tokens=8)],
    ids=lambda a: type(a).__name__,
)
def test_every_method_runs_an_iteration_on_the_gpu_in_bf16_mixed(algorithm, bf16_checkpoint, tmp_path):
    torch.manual_seed(0)
    module = RLModule(policy=bf16_checkpoint, algorithm=algorithm, **settings())
    before = module.policy.model.layers[0].self_attn.q_proj.weight.detach().clone()
    fitted = trainer(tmp_path)
    fitted.fit(module, data())
    assert module.device.type == ("cuda" if ON_GPU else "cpu")
    assert {p.dtype for p in module.policy.parameters()} == {torch.float32}
    assert {p.dtype for p in module.reference.parameters()} == {torch.bfloat16}
    after = module.policy.model.layers[0].self_attn.q_proj.weight.detach().to(before.device)
    assert not torch.equal(after, before), "no update reached the policy"
    for phase in ("generation", "scoring", "advantages", "training"):
        assert float(fitted.logged_metrics[f"memory/{phase}_gib"]) > 0


def test_the_first_mini_batch_has_ratio_one_on_the_gpu(monkeypatch, tmp_path):
    differences, loss = [], rl.ppo_policy_loss

    def recording(logprobs, old_logprobs, advantages, mask, *args):
        differences.append(float(((logprobs.detach() - old_logprobs) * mask).abs().max()))
        return loss(logprobs, old_logprobs, advantages, mask, *args)

    monkeypatch.setattr(rl, "ppo_policy_loss", recording)
    module = RLModule(policy=SFT, algorithm=GRPO(), **settings(mini_batch_size=32))
    trainer(tmp_path).fit(module, data())
    assert max(differences[: 32 // 8]) < 1e-5, differences[:4]


def test_a_rhomath_shaped_model_runs_a_vineppo_iteration(tmp_path):
    """RhoMath-1.1B's shape (22 layers, hidden 2048, 4 KV heads, vocabulary 32,000), random weights
    saved in bf16, with the built-in task's tokenizer padded to 32,000 entries."""
    tokenizer = AutoTokenizer.from_pretrained(SFT)
    tokenizer.add_tokens([f"<x{i}>" for i in range(32000 - len(tokenizer))])
    shape = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4) if ON_GPU else \
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=2048, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **shape)
    torch.manual_seed(0)
    with torch.device("cuda" if ON_GPU else "cpu"):
        LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path / "rho")
    tokenizer.save_pretrained(tmp_path / "rho")
    module = RLModule(policy=str(tmp_path / "rho"), algorithm=VinePPO(num_mc_rollouts=3), gradient_checkpointing=True,
                      **settings(max_new_tokens=64, learning_rate=1e-6))
    assert {p.dtype for p in module.policy.parameters()} == {torch.float32}
    fitted = trainer(tmp_path)
    fitted.fit(module, data(prompts=4))
    assert float(fitted.logged_metrics["vine/mc_rollouts"]) > 0 and fitted.global_step > 0
    print({k: round(float(v), 3) for k, v in fitted.logged_metrics.items() if k.startswith(("memory/", "time/"))})


def test_one_iteration_at_lr_1e6_moves_almost_every_weight_on_the_gpu(bf16_checkpoint, tmp_path):
    module = RLModule(policy=bf16_checkpoint, algorithm=GRPO(), **settings(learning_rate=1e-6, mini_batch_size=32))
    before = module.policy.model.layers[0].self_attn.q_proj.weight.detach().clone()
    trainer(tmp_path).fit(module, data())
    moved = float((module.policy.model.layers[0].self_attn.q_proj.weight.detach().to(before.device) != before).float().mean())
    assert moved > 0.99, f"lr 1e-6 moved {moved:.2%} of q_proj"


def test_a_checkpoint_resumes_exactly_on_the_gpu(tmp_path):
    """Two iterations straight against one, a checkpoint, and a resume: the same weights. Run with
    deterministic kernels (CUDA's atomics otherwise reorder sums from run to run)."""

    def run(iterations: int, resume: str | None = None, checkpoint: bool = False) -> RLModule:
        torch.manual_seed(0)
        module = RLModule(policy=SFT, algorithm=GRPO(), **settings())
        callbacks = [RunCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, export_hf=False)] if checkpoint else []
        trainer(tmp_path, iterations, callbacks=callbacks, deterministic=True).fit(module, data(), ckpt_path=resume)
        return module

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    straight = run(2)
    run(1, checkpoint=True)
    resumed = run(2, resume=str(tmp_path / "ckpt" / "last.ckpt"))
    for (name, a), (_, b) in zip(straight.policy.named_parameters(), resumed.policy.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)

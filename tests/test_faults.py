"""Numerical faults: a non-finite loss or gradient skips the update, is counted, and stops the run
after max_consecutive_nonfinite in a row; a ratio explosion skips the mini-batch."""

from __future__ import annotations

import pytest
import torch
from lightning import Trainer

from conftest import REPO
from lit_vine import GRPO, ArithmeticTask, RLModule, TaskDataModule
from lit_vine.evaluation import EvalConfig
from lit_vine.faults import NonFiniteError, UpdateGuard

SFT = str(REPO / "checkpoints" / "sft-arith")


def run(module, iterations=1, callbacks=()):
    data = TaskDataModule(ArithmeticTask(num_train=64, num_validation=2, num_test=2), prompts_per_iteration=2, eval_batch_size=2)
    trainer = Trainer(max_epochs=iterations, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks))
    trainer.fit(module, data)
    return trainer


def module(**overrides):
    torch.manual_seed(0)
    settings = dict(policy=SFT, algorithm=GRPO(), responses_per_prompt=2, max_new_tokens=40, learning_rate=1e-3,
                    mini_batch_size=2, micro_batch_size=2, evaluation=EvalConfig(num_samples=0))
    return RLModule(**{**settings, **overrides})  # 4 episodes, 2 mini-batches x 2 PPO epochs = 4 updates


def finite(m):
    return all(torch.isfinite(p).all() for p in m.policy.parameters())


def test_nan_loss_skips_the_update_and_counts_it():
    m = module()
    original, calls = m._policy_loss, []

    def poisoned(micro, share):
        loss, stats = original(micro, share)
        calls.append(1)
        return (loss * float("nan"), {**stats, "policy_loss": loss.detach() * float("nan")}) if len(calls) == 2 else (loss, stats)

    m._policy_loss = poisoned
    trainer = run(m)
    assert m.update_guard.skipped == 1 and float(trainer.logged_metrics["train/skipped_updates"]) == 1.0
    assert trainer.global_step == 3  # 4 mini-batches, one skipped: no optimizer step
    assert finite(m)


def test_nan_gradient_skips_the_update():
    m = module()
    poison = {"left": 2}

    def hook(grad):
        if poison["left"]:
            poison["left"] -= 1
            return grad * float("nan")
        return grad

    m.policy.model.norm.weight.register_hook(hook)
    trainer = run(m)
    assert m.update_guard.skipped == 2 and trainer.global_step == 2
    assert m.update_guard.consecutive["policy"] == 0  # the run recovered
    assert finite(m)


def test_consecutive_nonfinite_updates_stop_the_run_saying_where():
    m = module(max_consecutive_nonfinite=3)
    m.policy.model.norm.weight.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteError) as err:
        run(m)
    message = str(err.value)
    assert "3 policy updates in a row were non-finite (max_consecutive_nonfinite=3)" in message
    assert "iteration 0, mini-batch 2: policy gradient norm is" in message
    assert finite(m)


def test_ratio_explosion_skips_the_mini_batch():
    m = module()
    before = {k: v.clone() for k, v in m.policy.state_dict().items()}
    m.update_guard.max_mean_ratio = 0.5  # every mini-batch (ratio ~1) is "beyond the bound"
    trainer = run(m)
    assert m.update_guard.skipped == 4 and trainer.global_step == 0
    assert m.update_guard.consecutive.get("policy", 0) == 0  # not counted as non-finite: no stop
    assert all(torch.equal(v, before[k]) for k, v in m.policy.state_dict().items())


def test_update_guard_rules_and_state():
    guard = UpdateGuard(max_consecutive_nonfinite=2, max_mean_ratio=5.0)
    assert guard.reason_to_skip("policy", 0.3, 1.0, 1.01) is None
    assert guard.reason_to_skip("policy", float("nan"), 1.0, None) == "policy loss is nan"
    assert guard.reason_to_skip("critic", 0.3, float("inf"), None) == "critic gradient norm is inf"
    assert "max_mean_ratio=5.0" in guard.reason_to_skip("policy", 0.3, 1.0, 7.0)
    guard.record("policy", "policy loss is nan", 0, 0)
    guard.record("critic", "critic loss is nan", 0, 0)  # counted per model
    restored = UpdateGuard(2)
    restored.load_state_dict(guard.state_dict())
    assert restored.skipped == 2 and restored.consecutive == {"policy": 1, "critic": 1}
    with pytest.raises(NonFiniteError, match="2 critic updates in a row"):
        restored.record("critic", "critic loss is nan", 4, 7)

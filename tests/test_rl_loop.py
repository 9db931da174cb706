"""Short RL loops end to end: a policy update happens and the metrics are logged."""

import json
import math

import pytest
import torch
from lightning import Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from conftest import REPO
from lit_vine import GRPO, PPO, RLOO, VCPPO, ArithmeticTask, DPOPlus, Reinforce, RestEM, RLModule, SPOChain, SPOTree, TaskDataModule, VinePPO
from lit_vine.cli import main
from lit_vine.evaluation import EvalConfig
from lit_vine.experience import Experience, pad_batch

SFT = str(REPO / "checkpoints" / "sft-arith")


def tiny_run(algorithm, tmp_path, iterations=2, **overrides):
    torch.manual_seed(0)
    settings = dict(
        policy=SFT,
        algorithm=algorithm,
        responses_per_prompt=2,
        max_new_tokens=40,
        learning_rate=1e-3,
        critic_learning_rate=1e-3,
        mini_batch_size=8,
        micro_batch_size=4,
        evaluation=EvalConfig(num_samples=2),
    )
    module = RLModule(**{**settings, **overrides})
    data = TaskDataModule(ArithmeticTask(num_train=64, num_validation=8, num_test=8), prompts_per_iteration=8, eval_batch_size=8)
    trainer = Trainer(
        max_epochs=iterations,
        accelerator="cpu",
        logger=TensorBoardLogger(tmp_path, name="run"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    policy_before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    reference_before = {k: v.clone() for k, v in module.reference.state_dict().items()}
    trainer.fit(module, data)
    return trainer, module, policy_before, reference_before


def changed(model, before):
    return any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("algorithm", [VinePPO(num_mc_rollouts=2), PPO()], ids=["vineppo", "ppo"])
def test_short_rl_loop_updates_policy_and_logs(algorithm, tmp_path):
    trainer, module, policy_before, reference_before = tiny_run(algorithm, tmp_path)
    assert changed(module.policy, policy_before), "no policy update happened"
    assert not changed(module.reference, reference_before), "the reference must stay frozen"
    # 8 prompts x 2 responses = 16 episodes, mini-batches of 8, 2 PPO epochs -> 4 steps per iteration
    assert trainer.global_step == 2 * 4 * (2 if module.critic is not None else 1)
    metrics = trainer.logged_metrics
    for key in ["rollout/reward", "rollout/response_length", "train/policy_loss", "train/clip_frac", "train/kl_ref",
                "train/entropy", "advantages/std", "time/generation", "time/training", "val/greedy_acc", "val/pass@1"]:
        assert key in metrics, key
    assert 0.0 <= float(metrics["rollout/reward"]) <= 1.0
    if isinstance(algorithm, VinePPO):
        assert "time/value_estimation" in metrics and float(metrics["vine/mc_requests"]) > 0
    else:
        assert "train/value_loss" in metrics and "critic/value_mean" in metrics
    assert list((tmp_path / "run").glob("version_0/events.out.tfevents*")), "no TensorBoard log"
    assert list((tmp_path / "run" / "version_0" / "predictions").glob("val_*.jsonl"))


@pytest.mark.parametrize(
    "algorithm",
    [GRPO(), RLOO(), Reinforce(), RestEM(), DPOPlus(), VCPPO(value_pretrain_iterations=0), VCPPO(value_pretrain_iterations=0, length_adaptive_alpha=0.05),
     SPOChain(num_mc_rollouts=2, cutpoint_interval=2), SPOTree(branching=[2, 2], segment_tokens=8)],
    ids=["GRPO", "RLOO", "Reinforce", "RestEM", "DPOPlus", "VCPPO", "VAPO-lambda", "SPOChain", "SPOTree"],
)
def test_every_method_updates_the_policy(algorithm, tmp_path):
    trainer, module, policy_before, _ = tiny_run(algorithm, tmp_path, iterations=1, responses_per_prompt=4)
    assert trainer.global_step > 0
    assert changed(module.policy, policy_before)


def test_value_pretraining_changes_critic_not_policy(tmp_path):
    algorithm = VCPPO(value_pretrain_iterations=1)
    trainer, module, policy_before, _ = tiny_run(algorithm, tmp_path, iterations=1)
    fresh = RLModule(policy=SFT, algorithm=VCPPO())
    assert changed(module.critic, fresh.critic.state_dict()), "the critic must learn during pretraining"
    assert not changed(module.policy, policy_before), "the policy must stay frozen during value pretraining"
    assert float(trainer.logged_metrics["critic/value_pretraining"]) == 1.0
    assert "critic/explained_variance" in trainer.logged_metrics


def test_ppo_trains_the_critic(tmp_path):
    algorithm = PPO()
    torch.manual_seed(0)
    trainer, module, _, _ = tiny_run(algorithm, tmp_path)
    fresh = RLModule(policy=SFT, algorithm=PPO())
    assert changed(module.critic, fresh.critic.state_dict())


def test_kl_in_reward_runs_and_penalizes(tmp_path):
    trainer, module, policy_before, _ = tiny_run(VinePPO(num_mc_rollouts=2), tmp_path, kl_in="reward", kl_estimator="k1", kl_coef=0.1)
    assert changed(module.policy, policy_before)


def test_quickstart_cli_writes_test_report(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    main([
        "fit", "--config", "configs/quickstart.yaml",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        "--trainer.check_val_every_n_epoch", "1",
        "--model.responses_per_prompt", "2", "--model.algorithm.num_mc_rollouts", "2",
        "--model.evaluation.num_samples", "2",
        "--data.prompts_per_iteration", "8",
        "--data.task.init_args.num_test", "8", "--data.task.init_args.num_validation", "8",
    ])
    reports = list(tmp_path.glob("*/version_*/test_report.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert set(report) >= {"before", "after"} and "greedy_acc" in report["after"] and "pass@1" in report["before"]
    assert (reports[0].parent / "learning_curve.png").stat().st_size > 0


def test_scored_logprobs_and_values_match_unpadded_rows_whatever_the_micro_batch():
    """Old/reference log-probs and critic values of a padded batch equal each row's own forward
    pass (no padding, plain softmax at the sampling temperature), for any micro-batch size."""
    from lit_vine.experience import pad_batch

    module = RLModule(policy=SFT, algorithm=PPO(), temperature=0.7, micro_batch_size=2)
    tok = module.tokenizer
    task = ArithmeticTask(num_train=8, num_validation=0, num_test=0)
    problems = task.problems("train")[:5]
    prompts = [tok(task.prompt(p))["input_ids"] for p in problems]
    responses = [tok(p.solution)["input_ids"][: 3 + 4 * i] for i, p in enumerate(problems)]  # ragged widths
    ids, att, mask = pad_batch(prompts, responses, tok.pad_token_id)
    T = mask.shape[1]
    logprobs = module.sequence_logprobs(module.policy, ids, att, T)
    values = module.critic_values(ids, att, T)
    module.hparams.micro_batch_size = 64
    assert torch.allclose(module.sequence_logprobs(module.policy, ids, att, T), logprobs, atol=1e-5)
    assert torch.allclose(module.critic_values(ids, att, T), values, atol=1e-5)
    with torch.no_grad():
        for b, (p, r) in enumerate(zip(prompts, responses)):
            row = torch.tensor([p + r])
            logits = module.policy(row).logits[0, len(p) - 1 : -1] / 0.7
            expected = torch.log_softmax(logits, -1)[torch.arange(len(r)), torch.tensor(r)]
            assert torch.allclose(logprobs[b, : len(r)], expected, atol=1e-4)
            # V(s_t) is the value head on the last token of the state before response token t
            own = module.critic(row, torch.ones_like(row), torch.arange(row.shape[1])[None])[0, len(p) - 1 : -1]
            assert torch.allclose(values[b, : len(r)], own, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients_and_trains(tmp_path):
    plain = RLModule(policy=SFT, algorithm=PPO())
    ckpt = RLModule(policy=SFT, algorithm=PPO(), gradient_checkpointing=True)

    def checkpointed(body):
        return [layer.gradient_checkpointing for layer in body.layers]

    assert all(checkpointed(ckpt.policy.model)) and all(checkpointed(ckpt.critic.body))
    assert not any(checkpointed(plain.policy.model)) and not any(checkpointed(ckpt.reference.model))
    ids = torch.tensor([ckpt.tokenizer("Compute 3 +4 *2 from left to right.\n3+4=7\n7*2=14\n#### 14")["input_ids"]])
    recomputed = []

    def counted(checkpoint):
        return lambda *args, **kwargs: recomputed.append(1) or checkpoint(*args, **kwargs)

    for layer in ckpt.policy.model.layers:
        layer._gradient_checkpointing_func = counted(layer._gradient_checkpointing_func)
    grads = []
    for module in (plain, ckpt):
        module.policy.train()
        logits = module.policy(ids).logits[0, :-1]
        torch.log_softmax(logits, -1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in module.policy.parameters()]))
    assert len(recomputed) == ckpt.policy.config.num_hidden_layers  # every decoder layer checkpointed
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)
    trainer, module, policy_before, _ = tiny_run(PPO(), tmp_path, iterations=1, gradient_checkpointing=True)
    assert changed(module.policy, policy_before)


def test_mini_batch_whitening_standardizes_each_mini_batch(tmp_path, monkeypatch):
    """PPO (the reference whitens per mini-batch): every mini-batch's advantages have mean 0 and
    unbiased std 1 over its tokens; without whitening they are the estimator's raw values."""
    seen = []
    original = RLModule._policy_loss

    def spy(self, micro, share):
        seen.append((micro.advantages.clone(), micro.response_mask.clone()))
        return original(self, micro, share)

    monkeypatch.setattr(RLModule, "_policy_loss", spy)
    tiny_run(PPO(), tmp_path, iterations=1, mini_batch_size=8, micro_batch_size=8)
    assert len(seen) == 4  # 16 episodes, mini-batches of 8, 2 PPO epochs
    for adv, mask in seen:
        values = adv[mask.bool()].double()
        assert abs(float(values.mean())) < 1e-5 and abs(float(values.std()) - 1) < 1e-4


def test_kl_term_is_the_references(tmp_path):
    """kl_aggregation=seq_sum, kl_clip=10: coef x mean over responses of the per-token k3 clamped to
    [0, 10] and summed over the response, worked out by hand from chosen log-ratios."""
    module = RLModule(policy=SFT, kl_coef=0.5, kl_aggregation="seq_sum", kl_clip=10.0, entropy_coef=0.0)
    tok = module.tokenizer
    prompts = [tok("Compute 1 +2 from left to right.\n").input_ids] * 2
    responses = [tok("1+2=3\n#### 3", add_special_tokens=False).input_ids, tok("#### 3", add_special_tokens=False).input_ids]
    ids, attention, mask = pad_batch(prompts, responses, tok.pad_token_id)
    T = mask.shape[1]
    logprobs = module.sequence_logprobs(module.policy, ids, attention, T)
    delta = torch.zeros_like(logprobs)  # log pi - log pi_ref per token
    delta[0, 0], delta[0, 1], delta[1, 0] = 3.0, -3.0, 1.0
    batch = Experience(ids, attention, mask, logprobs, logprobs - delta, torch.zeros_like(mask), torch.zeros_like(mask), torch.zeros_like(mask))
    loss, stats = module._policy_loss(batch, {"token_mean": 1.0, "seq_mean": 1.0, "seq_sum": 1.0})
    k3 = lambda d: math.exp(-d) - 1 + d  # noqa: E731
    expected = (k3(3.0) + min(k3(-3.0), 10.0) + k3(1.0)) / 2  # k3(-3) = 16.09 is clamped to 10
    assert float(stats["kl_ref"]) == pytest.approx(expected, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(0.5 * expected, rel=1e-4)  # A = 0: only the KL term


def test_iteration_time_covers_the_weight_sync(tmp_path):
    """``time/iteration`` runs to the end of the iteration, weight sync included."""
    import time

    from lit_vine import HFEngine, RolloutCallback

    class SlowSync(HFEngine):
        def sync_weights(self, policy):
            time.sleep(0.3)

    module = RLModule(policy=SFT, algorithm=GRPO(), responses_per_prompt=2, max_new_tokens=20, mini_batch_size=8, micro_batch_size=8)
    data = TaskDataModule(ArithmeticTask(num_train=16, num_validation=4, num_test=4), prompts_per_iteration=4)
    trainer = Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, callbacks=[RolloutCallback(SlowSync())])
    start = time.perf_counter()
    trainer.fit(module, data)
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["time/weight_sync"] >= 0.3
    assert metrics["time/iteration"] >= metrics["time/weight_sync"] + metrics["time/generation"] + metrics["time/scoring"]
    assert metrics["time/iteration"] <= wall


def test_validation_samples_from_the_iterations_new_weights(tmp_path):
    """Lightning validates before the iteration's ``on_train_epoch_end``: an engine that keeps its
    own copy of the weights (vLLM) must get them before validation samples, or validation measures
    the previous iteration's policy (as on 28070cc)."""
    from lightning import Callback

    from lit_vine import HFEngine, RolloutCallback

    events = []

    class RecordingEngine(HFEngine):
        def sync_weights(self, policy):
            events.append("sync")

    class Recorder(Callback):
        def on_train_batch_end(self, *args):
            events.append("train")

        def on_validation_start(self, *args):
            events.append("validation")

    module = RLModule(policy=SFT, algorithm=GRPO(), responses_per_prompt=2, max_new_tokens=16, mini_batch_size=8, micro_batch_size=8,
                      ppo_epochs=1, evaluation=EvalConfig(num_samples=0))
    trainer = Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, check_val_every_n_epoch=1, default_root_dir=tmp_path,
                      callbacks=[RolloutCallback(RecordingEngine()), Recorder()])
    trainer.fit(module, TaskDataModule(ArithmeticTask(num_train=16, num_validation=2, num_test=2), prompts_per_iteration=4))
    validations = [i for i, e in enumerate(events) if e == "validation"]
    assert len(validations) == 2
    for i in validations:
        last_update = max(j for j in range(i) if events[j] == "train")
        assert "sync" in events[last_update:i], events

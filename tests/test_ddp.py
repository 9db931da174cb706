"""The RL loop under DDP on 2 CPU processes (gloo), launched the way a user launches it:
``lit-vine fit --config configs/quickstart.yaml --trainer.strategy ddp --trainer.devices 2``.

A test-only callback (:class:`RolloutRecorder`, loaded by the CLI through its class_path) records
on every rank the problem ids each iteration rolled out, the advantages before and after
whitening, and the policy weights at the start and end of training. The test then checks that

(a) both ranks end with identical policy weights (and that training did change them);
(b) every prompt of every iteration was rolled out exactly once across the ranks, and the union
    is exactly the iteration's prompts of a single-process run;
(c) the whitening statistics each rank used are those of the pooled batch of both ranks;
(d) validation and the test report evaluate every problem exactly once (no DistributedSampler
    padding duplicates) and write one prediction per problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from lightning import Callback

from lit_vine.algorithms import VinePPO
from lit_vine.callbacks.rollout import rollout_callback

ROOT = Path(__file__).resolve().parents[1]
NUM_VALIDATION = 5  # odd on purpose: 2 ranks cannot split it evenly
NUM_TEST = 3
PROMPTS_PER_ITERATION = 6
ITERATIONS = 2


class NoisyVinePPO(VinePPO):
    """VinePPO plus small seeded per-token noise. The untrained ``builtin:tiny`` policy never
    answers correctly, so plain VinePPO advantages are all zero: whitening would be degenerate and
    the policy would not move. The noise (different on each rank) makes both checks meaningful."""

    def advantages(self, rollouts, ctx):
        advantages, returns = super().advantages(rollouts, ctx)
        generator = torch.Generator().manual_seed(ctx.seed)
        noise = torch.randn(advantages.shape, generator=generator) + 0.5
        return (advantages + noise.to(advantages.device)) * rollouts.response_mask, returns


class RolloutRecorder(Callback):
    """Records, on each rank, what the test needs; writes ``rank<k>.pt`` to ``out_dir`` at the end."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.iterations: list[dict] = []
        self._raw = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit":
            return
        self.initial = {k: v.detach().cpu().clone() for k, v in pl_module.policy.state_dict().items()}
        rollouts = rollout_callback(trainer)
        algorithm, make_experience = pl_module.algorithm, rollouts.make_experience
        estimate = algorithm.advantages

        def recording_advantages(rollouts, ctx):
            advantages, returns = estimate(rollouts, ctx)
            self._raw = (advantages.detach().cpu().clone(), rollouts.response_mask.detach().cpu().clone())
            return advantages, returns

        def recording_make_experience(trainer, module):
            experience = make_experience(trainer, module)
            raw, mask = self._raw
            problems = trainer.datamodule.iteration_problems(trainer.current_epoch, trainer.global_rank, trainer.world_size)
            self.iterations.append(
                {
                    "iteration": trainer.current_epoch,
                    "problem_ids": [p.id for p in problems],
                    "raw_advantages": raw,
                    "response_mask": mask,
                    "whitened": experience.advantages.clone(),
                }
            )
            return experience

        algorithm.advantages = recording_advantages
        rollouts.make_experience = recording_make_experience

    def on_fit_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "iterations": self.iterations,
                "initial": self.initial,
                "final": {k: v.detach().cpu().clone() for k, v in pl_module.policy.state_dict().items()},
            },
            os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"),
        )


def _run_config(tmp_path: Path, out_dir: Path) -> Path:
    config = tmp_path / "ddp_test.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            trainer:
              accelerator: cpu
              devices: 2
              strategy: ddp
              max_epochs: {ITERATIONS}
              check_val_every_n_epoch: 1
              enable_progress_bar: false
              enable_model_summary: false
              default_root_dir: {tmp_path}
              logger:
                class_path: lightning.pytorch.loggers.TensorBoardLogger
                init_args: {{save_dir: {tmp_path}, name: ddp, version: 0}}
              callbacks:
                - class_path: lit_vine.callbacks.TestReport
                - class_path: test_ddp.RolloutRecorder
                  init_args: {{out_dir: {out_dir}}}
            model:
              init_args:
                policy: builtin:tiny
                algorithm:
                  class_path: test_ddp.NoisyVinePPO
                  init_args: {{num_mc_rollouts: 2, max_step_for_value_estimation: 3}}
                responses_per_prompt: 2
                whiten_advantages: batch
                max_new_tokens: 12
                ppo_epochs: 1
                mini_batch_size: 3
                micro_batch_size: 2
                learning_rate: 1.0e-3
                evaluation: {{num_samples: 2, temperature: 0.35, top_p: 0.9, greedy: true}}
            data:
              init_args:
                task:
                  class_path: lit_vine.ArithmeticTask
                  init_args: {{num_train: 200, num_validation: {NUM_VALIDATION}, num_test: {NUM_TEST}, seed: 0}}
                prompts_per_iteration: {PROMPTS_PER_ITERATION}
                eval_batch_size: 2
            """
        )
    )
    return config


@pytest.mark.slow
def test_rl_loop_under_ddp_on_two_cpu_processes(tmp_path):
    out_dir = tmp_path / "records"
    config = _run_config(tmp_path, out_dir)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # 2 processes on 2 cores: oversubscribed threads make torch ~10x slower
    env.pop("LOCAL_RANK", None)
    command = [sys.executable, "-m", "lit_vine", "fit", "--config", "configs/quickstart.yaml", "--config", str(config)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"lit-vine fit under DDP failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"

    ranks = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert all(len(r["iterations"]) == ITERATIONS for r in ranks)

    # (a) identical policy weights on both ranks, and training moved them.
    final0, final1 = ranks[0]["final"], ranks[1]["final"]
    assert final0.keys() == final1.keys()
    for name in final0:
        torch.testing.assert_close(final0[name], final1[name], rtol=0, atol=0, msg=f"ranks disagree on {name}")
    moved = max(float((final0[k] - ranks[0]["initial"][k]).abs().max()) for k in final0)
    assert moved > 0, "the policy did not change: the weight check would be vacuous"

    # (b) each iteration's prompts rolled out exactly once across ranks, and they are the
    # prompts a single process would have used for that iteration.
    from lit_vine.data import TaskDataModule
    from lit_vine.tasks.arithmetic import ArithmeticTask

    single = TaskDataModule(ArithmeticTask(num_train=200, num_validation=NUM_VALIDATION, num_test=NUM_TEST, seed=0), prompts_per_iteration=PROMPTS_PER_ITERATION)
    for it in range(ITERATIONS):
        shards = [r["iterations"][it]["problem_ids"] for r in ranks]
        assert all(r["iterations"][it]["iteration"] == it for r in ranks)
        assert all(len(s) == PROMPTS_PER_ITERATION // 2 for s in shards)
        union = shards[0] + shards[1]
        assert len(set(union)) == len(union), f"iteration {it}: a prompt was rolled out on both ranks"
        assert sorted(union) == sorted(p.id for p in single.iteration_problems(it)), f"iteration {it}: prompts dropped or added"
    assert set(ranks[0]["iterations"][0]["problem_ids"] + ranks[1]["iterations"][0]["problem_ids"]).isdisjoint(
        ranks[0]["iterations"][1]["problem_ids"] + ranks[1]["iterations"][1]["problem_ids"]
    ), "iteration 1 repeated prompts of iteration 0 although the training set has 200 problems"

    # (c) whitening used the pooled statistics of both ranks' batches.
    for it in range(ITERATIONS):
        records = [r["iterations"][it] for r in ranks]
        pooled = torch.cat([rec["raw_advantages"][rec["response_mask"].bool()] for rec in records]).double()
        mean, var = pooled.mean(), pooled.var(unbiased=True)  # divisor N - 1, as the reference
        local_means = [rec["raw_advantages"][rec["response_mask"].bool()].double().mean() for rec in records]
        assert abs(float(local_means[0] - local_means[1])) > 1e-3, "rank batches have equal means: the check would not tell pooled from local"
        for rec in records:
            mask = rec["response_mask"]
            expected = ((rec["raw_advantages"].double() - mean) / (var + 1e-8).sqrt() * mask).float()
            torch.testing.assert_close(rec["whitened"], expected, rtol=1e-4, atol=1e-4)

    # (d) validation and test report: every problem exactly once, metrics over all of them.
    predictions = tmp_path / "ddp" / "version_0" / "predictions"
    for name, count in [("val_iter0000.jsonl", NUM_VALIDATION), ("val_iter0001.jsonl", NUM_VALIDATION), ("test_before.jsonl", NUM_TEST), ("test_after.jsonl", NUM_TEST)]:
        ids = [json.loads(line)["id"] for line in (predictions / name).read_text().splitlines()]
        assert len(ids) == count and len(set(ids)) == count, f"{name}: {ids}"
    report = json.loads((tmp_path / "ddp" / "version_0" / "test_report.json").read_text())
    assert report["iterations"] == ITERATIONS


# ----- every rank on the same path ---------------------------------------------------------------
SAME_PATH = {
    "RestEM": {"class_path": "lit_vine.RestEM"},
    "DPOPlus": {"class_path": "lit_vine.DPOPlus"},
    "SPOTree": {"class_path": "lit_vine.SPOTree", "init_args": {"branching": [2, 2], "segment_tokens": 8}},
    "VCPPO": {"class_path": "lit_vine.VCPPO", "init_args": {"value_pretrain_iterations": 1, "value_pretrain_patience": 1}},
    "VinePPO": {"class_path": "lit_vine.VinePPO", "init_args": {"num_mc_rollouts": 2}},
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(SAME_PATH))
def test_ddp_ranks_take_the_same_path_when_one_rank_gets_every_answer_right(tmp_path, method):
    """Rank 1 grades every response right, rank 0 grades as the task does: RestEM keeps every
    response on one rank and few on the other, DPO+ has pairs on one rank only, SPO-tree's trees
    have edges on one rank only, VC-PPO's critic explains different variances, VinePPO's blame
    statistics exist on one rank only. Every rank must still run as many forwards, backwards and
    collectives (else the run hangs: the timeout fails it), log the same keys, take the same
    decisions and end with the same weights."""
    from two_processes import launch, load_records, run_config

    out = tmp_path / "records"
    strategy = "ddp_find_unused_parameters_true" if method == "VCPPO" else "ddp"  # as configs/strategies/ddp.yaml: a critic's backward leaves the policy out
    config = run_config(tmp_path, "same_path", algorithm=SAME_PATH[method], strategy=strategy, iterations=2,
                        callbacks=[{"class_path": "two_processes.AllRightOnOneRank"}, {"class_path": "two_processes.Recorder", "init_args": {"out_dir": str(out)}}])
    launch(config, timeout=300)
    ranks = load_records(out)
    assert ranks[0]["iterations"] == ranks[1]["iterations"], "ranks differ in steps, updates or logged keys"
    assert ranks[0]["value_pretraining"] == ranks[1]["value_pretraining"]
    for name, tensor in ranks[0]["weights"].items():
        assert torch.equal(tensor, ranks[1]["weights"][name]), f"ranks disagree on {name}"
    assert ranks[0]["iterations"][-1]["policy_updates"] > 0 or method == "VCPPO"
    if method == "VinePPO":
        assert "blame/accuracy" in ranks[0]["metrics"]  # from rank 0's failed responses only, logged by both


@pytest.mark.slow
def test_a_mid_iteration_checkpoint_resumes_every_rank_exactly(tmp_path):
    """SIGTERM on both processes inside iteration 1 writes a checkpoint holding each rank's
    experience and RNG; resuming it ends where an uninterrupted run ends, to the last bit."""
    from two_processes import launch, load_records, run_config

    algorithm = {"class_path": "lit_vine.GRPO"}
    checkpoint = {"class_path": "lit_vine.checkpointing.RunCheckpoint", "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True, "export_hf": False}}
    interrupt = {"class_path": "lit_vine.faults.CheckpointOnInterrupt"}
    record = lambda name: {"class_path": "two_processes.Recorder", "init_args": {"out_dir": str(tmp_path / name)}}  # noqa: E731
    launch(run_config(tmp_path, "straight", algorithm=algorithm, iterations=2, callbacks=[record("straight")]))
    stop = {"class_path": "two_processes.StopInsideIteration", "init_args": {"iteration": 1, "batch": 0}}  # of 2: 2 PPO epochs of 1
    launch(run_config(tmp_path, "stopped", algorithm=algorithm, iterations=2, callbacks=[checkpoint, interrupt, stop]), returncode=143)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["lit_vine_rollouts"]["in_iteration"]
    assert saved["mini_batches_done"] == 1 and len(saved["ranks"]) == 2
    assert not torch.equal(saved["ranks"][0]["experience"]["input_ids"], saved["ranks"][1]["experience"]["input_ids"])
    launch(run_config(tmp_path, "resumed", algorithm=algorithm, iterations=2, callbacks=[checkpoint, interrupt, record("resumed")]),
           "--ckpt_path", str(tmp_path / "ckpt" / "last.ckpt"))
    straight, resumed = load_records(tmp_path / "straight"), load_records(tmp_path / "resumed")
    for name, tensor in straight[0]["weights"].items():
        torch.testing.assert_close(resumed[0]["weights"][name], tensor, rtol=0, atol=0, msg=name)
        torch.testing.assert_close(resumed[1]["weights"][name], tensor, rtol=0, atol=0, msg=name)
    assert resumed[0]["metrics"] == straight[0]["metrics"]


# ----- vLLM across processes (a stand-in vllm: tests/stand_ins/vllm) -----------------------------
@pytest.mark.slow
def test_ddp_vllm_engines_get_rank_variables_and_tensor_parallel_evaluation_cannot_hang(tmp_path):
    """Lightning's launcher sets no ``RANK``, which vLLM's external_launcher reads; and a
    tensor-parallel engine gathers its group's prompts at every call, so ranks with uneven
    evaluation shards (5 validation problems on 2 ranks, batches of 2) must still call it as often."""
    import json

    from two_processes import launch, run_config

    engine = {"class_path": "lit_vine.rollout.vllm.VLLMEngine", "init_args": {"dtype": "float32", "tensor_parallel_size": 2}}
    config = run_config(tmp_path, "vllm_ranks", algorithm={"class_path": "lit_vine.GRPO"}, iterations=1,
                        model={"max_new_tokens": 16, "evaluation": {"num_samples": 0, "greedy": True}},  # the stand-in decodes one request at a time
                        trainer={"callbacks": [{"class_path": "lit_vine.RolloutCallback", "init_args": {"engine": engine}},
                                               {"class_path": "lit_vine.callbacks.TestReport"}]})
    stand_in = str(ROOT / "tests" / "stand_ins")
    launch(config, timeout=300, env={"STAND_IN_OUT": str(tmp_path), "PYTHONPATH": stand_in})
    records = [json.loads((tmp_path / f"llm_rank{r}.json").read_text()) for r in range(2)]
    for rank, record in enumerate(records):
        assert (record["RANK"], record["LOCAL_RANK"], record["WORLD_SIZE"]) == (str(rank), str(rank), "2")
        assert record["MASTER_ADDR"] and record["MASTER_PORT"]
        assert record["backend"] == "external_launcher" and record["tensor_parallel_size"] == 2
    report = json.loads((tmp_path / "vllm_ranks" / "version_0" / "test_report.json").read_text())
    assert report["iterations"] == 1


def test_torchrun_variables_under_slurm(monkeypatch):
    """Under SLURM a process's local rank is ``SLURM_LOCALID``; ``RANK`` comes from the process group."""
    from lit_vine import distributed

    monkeypatch.setattr(distributed, "rank_and_world_size", lambda: (5, 8))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("MASTER_ADDR", "node-0")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert distributed.torchrun_environment() == {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}
    monkeypatch.delenv("MASTER_PORT")
    with pytest.raises(RuntimeError, match="MASTER_PORT not set"):
        distributed.torchrun_environment()

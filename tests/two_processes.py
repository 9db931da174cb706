"""Runs ``lit-vine fit`` on two CPU processes (gloo), launched the way a user launches it, and the
test callbacks those runs load by class path (this folder is on their ``PYTHONPATH``).

A run that hangs (ranks disagreeing on a collective) fails its ``timeout`` instead of hanging CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import Callback

ROOT = Path(__file__).resolve().parents[1]
SFT = str(ROOT / "checkpoints" / "sft-arith")


def run_config(tmp_path: Path, name: str, *, algorithm: dict, strategy: Any = "ddp", iterations: int = 2, callbacks: list[dict] = (),
               model: dict | None = None, data: dict | None = None, trainer: dict | None = None) -> Path:
    """A small two-process run on top of configs/quickstart.yaml, written to ``tmp_path/<name>.yaml``."""
    config = {
        "trainer": {
            "accelerator": "cpu", "devices": 2, "strategy": strategy, "precision": "32-true", "max_epochs": iterations,
            "check_val_every_n_epoch": 1, "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(tmp_path),
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": str(tmp_path), "name": name, "version": 0}},
            "callbacks": [{"class_path": "lit_vine.RolloutCallback"}, *callbacks],
            "enable_checkpointing": any("Checkpoint" in c["class_path"] for c in callbacks),
            **(trainer or {}),
        },
        "model": {"init_args": {
            "policy": SFT, "algorithm": algorithm, "responses_per_prompt": 2, "max_new_tokens": 40, "ppo_epochs": 2, "mini_batch_size": 4,
            "micro_batch_size": 2, "learning_rate": 1.0e-4, "critic_learning_rate": 1.0e-3, "lr_schedule": {"warmup_steps": 0},
            "evaluation": {"num_samples": 2, "temperature": 0.35, "top_p": 0.9, "greedy": True}, **(model or {}),
        }},
        "data": {"init_args": {
            "task": {"class_path": "lit_vine.ArithmeticTask", "init_args": {"num_train": 64, "num_validation": 5, "num_test": 3, "seed": 0}},
            "prompts_per_iteration": 4, "eval_batch_size": 2, **(data or {}),
        }},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launch(config: Path, *args: str, timeout: float = 420, env: dict[str, str] | None = None, returncode: int = 0) -> subprocess.CompletedProcess:
    """``lit-vine fit --config configs/quickstart.yaml --config <config> <args>`` on two processes;
    its exit status must be ``returncode`` (143: stopped by SIGTERM, checkpoint written)."""
    env = dict(env or {})
    first = env.pop("PYTHONPATH", None)  # e.g. a stand-in package that must shadow the real one
    environment = {**os.environ, **env}
    environment["PYTHONPATH"] = os.pathsep.join(p for p in [first, str(ROOT / "tests"), environment.get("PYTHONPATH", "")] if p)
    environment["OMP_NUM_THREADS"] = "1"  # two processes on two cores: more threads make torch ~10x slower
    environment.pop("LOCAL_RANK", None)
    command = [sys.executable, "-m", "lit_vine", "fit", "--config", "configs/quickstart.yaml", "--config", str(config), *args]
    proc = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == returncode, f"lit-vine fit on 2 processes exited with {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def load_records(folder: Path) -> list[dict]:
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


class Recorder(Callback):
    """Writes ``rank<k>.pt`` to ``out_dir`` at the end of fit: per iteration the keys this rank
    logged, its training steps and policy updates; the value-pretraining state; and (from rank 0)
    the policy's whole weights, gathered where sharded."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.iterations, self.steps = out_dir, [], 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.iterations.append({"keys": sorted(trainer.callback_metrics), "steps": self.steps, "policy_updates": pl_module.policy_updates})

    def on_fit_end(self, trainer, pl_module) -> None:
        from lit_vine.checkpointing import fingerprint
        from lit_vine.distributed import iter_full_parameters

        weights = {name: tensor.cpu().clone() for name, tensor in iter_full_parameters(pl_module.policy)}  # every rank gathers
        record = {
            "rank": trainer.global_rank,
            "iterations": self.iterations,
            "value_pretraining": dict(pl_module.value_pretraining),
            "reference_fingerprint": fingerprint(pl_module.reference),
            "rope_dtypes": sorted({str(m.inv_freq.dtype) for m in pl_module.policy.modules() if hasattr(m, "inv_freq")}),
            "weights": weights,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if not k.startswith(("time/", "memory/"))},
        }
        os.makedirs(self.out_dir, exist_ok=True)
        torch.save(record, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


class AllRightOnOneRank(Callback):
    """Rank ``rank`` grades every response right: its episodes differ in number from the other
    rank's for RestEM (all kept), DPO+ (no pair) and SPO-tree (no edge), and a critic's explained
    variance differs between the ranks."""

    def __init__(self, rank: int = 1) -> None:
        self.rank = rank

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.global_rank == self.rank:
            task = trainer.datamodule.task
            task.score_many = lambda pairs, tokenizer: [(tokenizer.decode(ids, skip_special_tokens=True), 1.0) for ids, _ in pairs]


class StopInsideIteration(Callback):
    """Every rank receives SIGTERM during mini-batch ``batch`` of iteration ``iteration``, as a
    preempted job's processes do: Lightning stops after that mini-batch (its SIGTERM exception) and
    ``CheckpointOnInterrupt`` writes the mid-iteration checkpoint."""

    def __init__(self, iteration: int, batch: int) -> None:
        self.iteration, self.batch = iteration, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.iteration and batch_idx == self.batch:
            trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets

"""SIGTERM to a running `lit-vine fit` writes a checkpoint; `--ckpt_path last` continues from it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch

from conftest import REPO

CONFIG = """
seed_everything: 0
trainer:
  max_epochs: {epochs}
  accelerator: cpu
  devices: 1
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  limit_val_batches: 0
  default_root_dir: {tmp}
  callbacks:
    - class_path: lit_vine.checkpointing.RunCheckpoint
      init_args: {{dirpath: {tmp}/ckpt, save_last: true, every_n_epochs: 1, export_hf: false}}
    - class_path: lit_vine.faults.CheckpointOnInterrupt
model:
  class_path: lit_vine.RLModule
  init_args:
    policy: {sft}
    algorithm: {{class_path: lit_vine.GRPO}}
    responses_per_prompt: 2
    max_new_tokens: 40
    learning_rate: 1.0e-3
    mini_batch_size: 2
    micro_batch_size: 2
    evaluation: {{num_samples: 0}}
data:
  class_path: lit_vine.TaskDataModule
  init_args:
    task: {{class_path: lit_vine.ArithmeticTask, init_args: {{num_train: 64, num_validation: 2, num_test: 2}}}}
    prompts_per_iteration: 2
    eval_batch_size: 2
"""


def lit_vine(*args):
    return [sys.executable, "-m", "lit_vine", *args]


def test_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(epochs=100000, tmp=tmp_path, sft=REPO / "checkpoints" / "sft-arith"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(lit_vine("fit", "--config", str(config)), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = tmp_path / "ckpt" / "last.ckpt"
    deadline = time.time() + 120
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert last.exists(), "no iteration finished in time"
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert f"checkpoint written to {last}" in output and "--ckpt_path" in output
    stopped = torch.load(last, weights_only=False)
    iteration, steps = stopped["epoch"], stopped["global_step"]

    # Resume: runs to two iterations past the interrupted one, never repeating an optimizer step.
    config.write_text(CONFIG.format(epochs=iteration + 2, tmp=tmp_path, sft=REPO / "checkpoints" / "sft-arith"))
    done = subprocess.run(lit_vine("fit", "--config", str(config), "--ckpt_path", "last"), cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Restoring states from the checkpoint path" in done.stdout + done.stderr
    final = torch.load(last, weights_only=False)
    assert final["epoch"] == iteration + 1
    assert final["global_step"] > steps

"""What a precision setting does to learning: the share of a weight matrix one RL iteration moves.

    python benchmarks/precision.py

The shipped SFT policy is saved in bf16 (as hub checkpoints are) and trained for one GRPO
iteration (8 prompts x 4 responses, 1 optimizer step) from it at the paper's learning rate 1e-6
and at 1e-5, under ``bf16-mixed`` (fp32 master weights, bf16 autocast: lit-vine's default for
GPUs), ``bf16-true`` (the weights themselves in bf16: half the memory of the weights, gradients
and Adam moments) and ``32-true``. Reported: the share of layer 0's q_proj entries that changed,
and the trained weights' dtype. An AdamW step moves every weight by about the learning rate; a
bf16 weight of size w only changes when that step exceeds half its spacing, w * 2^-8.
Results: benchmarks/precision/README.md.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path

import torch
from lightning import Trainer
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_vine import GRPO, ArithmeticTask, RLModule, TaskDataModule
from lit_vine.evaluation import EvalConfig
from lit_vine.schedule import LRSchedule

HERE = Path(__file__).resolve().parent
SFT = str(HERE.parent / "checkpoints" / "sft-arith")


def moved(checkpoint: str, precision: str, learning_rate: float) -> tuple[float, str]:
    torch.manual_seed(0)
    module = RLModule(policy=checkpoint, algorithm=GRPO(), responses_per_prompt=4, max_new_tokens=40, mini_batch_size=32,
                      micro_batch_size=8, ppo_epochs=1, learning_rate=learning_rate, lr_schedule=LRSchedule(), evaluation=EvalConfig(num_samples=0))
    trainer = Trainer(max_epochs=1, accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=checkpoint)
    before = module.policy.model.layers[0].self_attn.q_proj.weight.detach().float().clone()
    trainer.fit(module, TaskDataModule(ArithmeticTask(num_train=64, num_validation=2, num_test=2), prompts_per_iteration=8))
    after = module.policy.model.layers[0].self_attn.q_proj.weight.detach()
    return float((after.float() != before).float().mean()), str(after.dtype).replace("torch.", "")


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        AutoModelForCausalLM.from_pretrained(SFT).to(torch.bfloat16).save_pretrained(folder)
        AutoTokenizer.from_pretrained(SFT).save_pretrained(folder)
        for precision in ("bf16-mixed", "bf16-true", "32-true"):
            for lr in (1e-6, 1e-5):
                share, dtype = moved(folder, precision, lr)
                rows.append(f"| {precision} | {lr:g} | {dtype} | {100 * share:.2f} % |")
                print(rows[-1], flush=True)
    machine = f"{platform.machine()} {platform.processor() or ''}, torch {torch.__version__}"
    lines = ["# One iteration's update under each precision", "", f"`python benchmarks/precision.py` on {machine}: the shipped SFT policy",
             "saved in bf16, one GRPO iteration (one AdamW step) from it.", "",
             "| precision | learning rate | trained weights | q_proj entries moved |", "|---|---|---|---|", *rows]
    (HERE / "precision").mkdir(exist_ok=True)
    (HERE / "precision" / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

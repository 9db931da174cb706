"""Peak memory per phase of one RL iteration, against the bytes-per-parameter accounting of
docs/scaling.md, on the machine this runs on (CPU: the process's peak resident set; GPU: CUDA
memory allocated by tensors).

    python benchmarks/memory.py                      # sizes 25M, 50M, 100M, 200M; 32-true and bf16-mixed
    python benchmarks/memory.py --sizes 50 --precisions bf16-mixed

Each run builds a Llama of the given size with random weights, saves it in bf16 (as hub
checkpoints are), and runs one GRPO iteration from it in a fresh process (so that one run's peak
does not hide another's). The trained policy holds fp32 master weights, gradients and AdamW's two
moments (16 B per parameter); the frozen reference lives in the compute dtype (2 B under
``bf16-mixed``, 4 B under ``32-true``). The training phase's peak minus the process's memory before
the model was built, per parameter, should come out at about 16 + 2 (or 16 + 4) B, plus activations.
Results: benchmarks/memory/results.json and README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHAPES = {  # millions of parameters (tied embeddings over the shipped 284-token vocabulary) -> shape
    25: dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8),
    50: dict(hidden_size=640, intermediate_size=1792, num_hidden_layers=10, num_attention_heads=10),
    100: dict(hidden_size=896, intermediate_size=2432, num_hidden_layers=10, num_attention_heads=14),
    200: dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=18),
}

CHILD = r'''
import json, sys, torch
from lit_vine.devices import peak_memory_gib, reset_peak_memory
device = torch.device("cpu")
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
from lightning import Trainer
from lit_vine import GRPO, ArithmeticTask, RLModule, TaskDataModule
from lit_vine.evaluation import EvalConfig
folder, shape, precision = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
tok = AutoTokenizer.from_pretrained("checkpoints/sft-arith")
config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=512, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id, tie_word_embeddings=True, **shape)
torch.manual_seed(0)
LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
tok.save_pretrained(folder)
reset_peak_memory(device)
baseline = peak_memory_gib(device)  # the process before the trained model: torch, transformers, the tokenizer
module = RLModule(policy=folder, algorithm=GRPO(), responses_per_prompt=4, max_new_tokens=32, mini_batch_size=16, micro_batch_size=4,
                  ppo_epochs=1, learning_rate=1e-6, evaluation=EvalConfig(num_samples=0), packing=False)
params = sum(p.numel() for p in module.policy.parameters())
trainer = Trainer(max_epochs=1, accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=folder)
trainer.fit(module, TaskDataModule(ArithmeticTask(num_train=64, num_validation=2, num_test=2), prompts_per_iteration=4))
phases = {k.split("/")[1][:-4]: float(v) for k, v in trainer.logged_metrics.items() if k.startswith("memory/")}
print(json.dumps({"params": params, "baseline_gib": baseline, "phases_gib": phases,
                  "reference_dtype": str(next(module.reference.parameters()).dtype)}))
'''


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())


def run(size: int, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([sys.executable, "-c", CHILD, folder, json.dumps(SHAPES[size]), precision], cwd=REPO, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    training = result["phases_gib"]["training"] - result["baseline_gib"]
    result.update(size=size, precision=precision, bytes_per_param_at_training_peak=training * 2**30 / result["params"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SHAPES), choices=sorted(SHAPES))
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        for precision in args.precisions:
            results.append(run(size, precision))
            r = results[-1]
            print(f"{r['params'] / 1e6:.0f}M {precision}: reference {r['reference_dtype']}, peak per phase (GiB) "
                  f"{ {k: round(v, 2) for k, v in r['phases_gib'].items()} }, baseline {r['baseline_gib']:.2f}, "
                  f"training peak over baseline {r['bytes_per_param_at_training_peak']:.1f} B/param", flush=True)
    machine = f"{cpu_name()} ({os.cpu_count()} cores), {platform.system()}; torch {__import__('torch').__version__}"
    (HERE / "memory").mkdir(exist_ok=True)
    (HERE / "memory" / "results.json").write_text(json.dumps({"machine": machine, "command": " ".join(sys.argv), "runs": results}, indent=1))
    lines = ["# Peak memory per phase, measured", "", f"`python benchmarks/memory.py` on {machine} (peak resident set of the process).", "",
             "| params | precision | reference | generation | scoring | advantages | training | training peak over the bare process |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["phases_gib"]
        lines.append(f"| {r['params'] / 1e6:.0f}M | {r['precision']} | {r['reference_dtype'].replace('torch.', '')} | {p['generation']:.2f} | "
                     f"{p['scoring']:.2f} | {p['advantages']:.2f} | {p['training']:.2f} | {r['bytes_per_param_at_training_peak']:.1f} B/param |")
    lines += ["", "GiB. Expected at the training peak: 16 B per trained parameter (fp32 weights, gradients, AdamW's two moments) plus the",
              "reference (2 B under bf16-mixed, 4 B under 32-true), plus activations of one micro-batch and the allocator's slack."]
    (HERE / "memory" / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

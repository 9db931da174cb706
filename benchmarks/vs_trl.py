"""lit-vine against Hugging Face TRL on the same GRPO work, on this machine.

    pip install -e ".[bench]"                   # TRL is a benchmark-only extra
    python benchmarks/vs_trl.py                 # GRPO: 3 interleaved runs each, 10 measured iterations per run
    python benchmarks/vs_trl.py --method RLOO   # TRL's RLOOTrainer against lit-vine's RLOO

Both trainers start from ``checkpoints/sft-arith`` and do, per iteration, the quickstart's work:
32 prompts (the same problems, from ``TaskDataModule.iteration_problems``) x 4 responses, 64 new
tokens at T 0.6 / top_p 0.9, the task's reward, old and reference log-probs, then 2 passes of 4
optimizer steps of 32 episodes, k3 KL 1e-4 in the loss, fp32. ``SETTINGS`` maps every setting;
the ones that cannot be matched are named there. Every run is its own process; the two trainers
alternate, so a drift of the machine hits both. An iteration is timed from the start of its
generation to the start of the next one (everything in between counts), its first one is
warm-up and not counted. Writes ``benchmarks/vs_trl/`` (RLOO: ``benchmarks/vs_trl/rloo/``):
``results.json``, ``README.md``, ``rewards.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "vs_trl"
SFT = str(REPO / "checkpoints" / "sft-arith")
PROMPTS, RESPONSES, MINI_BATCH, EPOCHS = 32, 4, 32, 2
LR, WARMUP, KL, TEMPERATURE, TOP_P, NEW_TOKENS = 1e-5, 20, 1e-4, 0.6, 0.9, 64
PHASES = ["generation", "scoring", "training"]

# (setting, lit-vine, TRL, matched?); METHOD_SETTINGS add each method's own rows
SETTINGS = [
    ("model", "checkpoints/sft-arith, fp32", "the same folder, fp32 (bf16=False)", True),
    ("problems per iteration", "TaskDataModule.iteration_problems(k), 32", "a dataset of the same problems in the same order, shuffle_dataset=False, generation_batch_size=128", True),
    ("responses per prompt", "responses_per_prompt=4", "num_generations=4", True),
    ("sampling", "T 0.6, top_p 0.9, 64 new tokens (HFEngine, forked KV cache)", "temperature=0.6, top_p=0.9, top_k=0, max_completion_length=64 (model.generate)", True),
    ("reward", "ArithmeticTask.score (0 if cut before EOS)", "the same function as a reward_func", True),
    ("passes x optimizer steps", "ppo_epochs=2, mini_batch_size=32, micro_batch_size=32", "num_iterations=2, steps_per_generation=4, per_device_train_batch_size=32, gradient_accumulation_steps=1", True),
    ("old log-probs", "the sampler's own (HFEngine's fork decoding scores each token it samples; equal to a forward within 1e-5, tests/test_engine.py)", "a no-grad forward (gradient_accumulation_steps % generate_every != 0)", True),
    ("forward layout", "episodes packed end to end, no padding (lit_vine/packing.py; same numbers, tests/test_packing.py)", "padded batch; log-probs on completion positions only (fused LM head)", True),
    ("scoring temperature", "log-probs of logits / 0.6", "log-probs of logits / 0.6 (TRL's fused LM head)", True),
    ("optimizer", "torch AdamW(lr 1e-5, wd 0) + LRSchedule(warmup_steps=20)", "the same two objects, passed as optimizers=(...)", True),
    ("gradient clipping", "max_grad_norm=1.0", "max_grad_norm=1.0", True),
    ("update guard", "skips an update with a non-finite loss or mean ratio > 10 (none was skipped)", "none", False),
    ("log-ratio clamp", "log-ratios clamped to +-20 before exp", "none", False),
    ("gradient checkpointing", "off", "off", True),
    ("threads", "torch's default (all cores)", "torch's default (all cores)", True),
]
METHOD_SETTINGS = {
    "GRPO": [
        ("advantage", "GRPO: (R - group mean) / (group std + 1e-6)", "scale_rewards='group': / (group std + 1e-4)", False),
        ("loss", "clip 0.2/0.2, token mean over the mini-batch", "epsilon=0.2, loss_type='bnpo' (token mean of the local batch)", True),
        ("KL", "k3, coef 1e-4, in the loss, token mean", "beta=1e-4, use_bias_correction_kl=False", True),
    ],
    "RLOO": [
        ("advantage", "R - mean of the other 3 responses' R", "the same (normalize_advantages=False)", True),
        ("KL", "k1 summed over the response, coef 1e-4, subtracted from R (kl_in=reward, kl_estimator=k1)", "beta=1e-4: the same", True),
        ("loss", "clipped ratio per token, token mean", "clipped ratio of the whole sequence (exp of the summed log-ratio), mean over sequences", False),
    ],
}
LITVINE_FLAGS = {"GRPO": ["--model.algorithm=GRPO"], "RLOO": ["--model.algorithm=RLOO", "--model.init_args.kl_in=reward", "--model.init_args.kl_estimator=k1"]}


# ----- one run, in its own process -----------------------------------------------------------------
def problems_and_task(iterations: int):
    from lit_vine import ArithmeticTask, TaskDataModule

    data = TaskDataModule(ArithmeticTask(num_train=20000, seed=0), prompts_per_iteration=PROMPTS)
    return [p for k in range(iterations) for p in data.iteration_problems(k)], data.task


def run_litvine(method: str, seed: int, iterations: int) -> dict:
    from lightning import Callback

    from lit_vine.callbacks import TestReport
    from lit_vine.cli import LitVineCLI

    class Clock(Callback):  # first in the list: its epoch start comes before the rollout callback's
        def __init__(self) -> None:
            self.starts, self.phases, self.rewards = [], [], []

        def on_train_epoch_start(self, trainer, module) -> None:
            self.close(trainer)
            self.starts.append(time.perf_counter())

        def on_train_end(self, trainer, module) -> None:
            self.close(trainer)
            self.starts.append(time.perf_counter())

        def close(self, trainer) -> None:
            """The previous iteration's metrics, which the rollout callback logged at its end."""
            if self.starts:
                m = trainer.callback_metrics
                self.rewards.append(float(m["rollout/reward"]))
                gen, score, mc = (float(m.get(f"time/{k}", 0.0)) for k in ("generation", "scoring", "value_estimation"))
                self.phases.append({"generation": gen, "scoring": score + mc, "logged_iteration": float(m["time/iteration"])})

    args = ["--config", "configs/quickstart.yaml", *LITVINE_FLAGS[method], f"--seed_everything={seed}", f"--model.init_args.seed={seed}",
            f"--trainer.max_epochs={iterations}", "--trainer.logger=false", "--trainer.check_val_every_n_epoch=100000",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    cli = LitVineCLI(args=args, run=False, save_config_callback=None)
    clock = Clock()
    cli.trainer.callbacks = [clock] + [cb for cb in cli.trainer.callbacks if not isinstance(cb, TestReport)]
    cli.trainer.fit(cli.model, cli.datamodule)
    seconds = [b - a for a, b in zip(clock.starts, clock.starts[1:])]
    for total, phase in zip(seconds, clock.phases):
        phase["training"] = total - phase["generation"] - phase["scoring"]
    return {"seconds": seconds, "phases": clock.phases, "rewards": clock.rewards, "skipped_updates": cli.model.update_guard.skipped}


def run_trl(method: str, seed: int, iterations: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from lit_vine.schedule import LRSchedule

    problems, task = problems_and_task(iterations)
    tokenizer = AutoTokenizer.from_pretrained(SFT)
    for p in problems[:PROMPTS]:  # TRL tokenizes the prompt text: it must give lit-vine's prompt ids
        assert tokenizer(text=task.prompt(p))["input_ids"] == task.prompt_ids(p, tokenizer)
    rewards: list[float] = []

    def reward(prompts, completions, completion_ids, index, **kwargs) -> list[float]:
        scores = [r for _, r in task.score_many([(ids, problems[i]) for ids, i in zip(completion_ids, index)], tokenizer)]
        rewards.append(sum(scores) / len(scores))
        return scores

    phase: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phase[name] = phase.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    Trainer, Config = (GRPOTrainer, GRPOConfig) if method == "GRPO" else (RLOOTrainer, RLOOConfig)
    own = dict(loss_type="bnpo", scale_rewards="group", use_bias_correction_kl=False) if method == "GRPO" else dict(normalize_advantages=False)

    class Timed(Trainer):
        def _generate(self, prompts):
            return timed("generate", super()._generate)(prompts)

        def _calculate_rewards(self, *args):
            return timed("reward", super()._calculate_rewards)(*args)

        def _generate_and_score_completions(self, inputs):  # once per iteration: its phases end here
            result = timed("experience", super()._generate_and_score_completions)(inputs)
            generation = phase.get("generate", 0.0) + phase.get("reward", 0.0)
            phases.append({"generation": generation, "scoring": phase["experience"] - generation})
            phase.clear()
            return result

    steps_per_iteration = EPOCHS * PROMPTS * RESPONSES // MINI_BATCH
    starts, phases = [], []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step % steps_per_iteration == 0:
                starts.append(time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            starts.append(time.perf_counter())

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(SFT, dtype=torch.float32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    scheduler = LRSchedule(warmup_steps=WARMUP).scheduler(optimizer, None)
    dataset = Dataset.from_dict({"prompt": [task.prompt(p) for p in problems], "index": list(range(len(problems)))})
    with tempfile.TemporaryDirectory() as out:
        config = Config(
            output_dir=out, seed=seed, use_cpu=True, bf16=False, fp16=False, report_to="none", save_strategy="no", logging_steps=10**6,
            max_steps=iterations * steps_per_iteration, per_device_train_batch_size=MINI_BATCH, gradient_accumulation_steps=1,
            steps_per_generation=PROMPTS * RESPONSES // MINI_BATCH, num_generations=RESPONSES, num_iterations=EPOCHS, shuffle_dataset=False,
            max_completion_length=NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P, top_k=0, beta=KL, epsilon=0.2, max_grad_norm=1.0,
            learning_rate=LR, gradient_checkpointing=False, remove_unused_columns=False, dataloader_num_workers=0, disable_tqdm=True, **own,
        )
        trainer = Timed(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
                        optimizers=(optimizer, scheduler), callbacks=[Clock()])
        trainer.train()
    seconds = [b - a for a, b in zip(starts, starts[1:])]
    for total, p in zip(seconds, phases):
        p["training"] = total - p["generation"] - p["scoring"]
    return {"seconds": seconds, "phases": phases, "rewards": rewards}


def child(side: str, method: str, seed: int, iterations: int, out: Path) -> None:
    result = (run_litvine if side == "lit-vine" else run_trl)(method, seed, iterations)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(json.dumps(result))


# ----- the comparison -----------------------------------------------------------------------------
def summarize(runs: list[dict]) -> dict:
    """Medians over the measured iterations of all runs (the first of each run is warm-up)."""
    per_iter = [s for r in runs for s in r["seconds"][1:]]
    phases = {p: statistics.median(ph[p] for r in runs for ph in r["phases"][1:]) for p in PHASES}
    run_medians = [statistics.median(r["seconds"][1:]) for r in runs]
    mean_rewards = [statistics.fmean(r["rewards"]) for r in runs]
    return {
        "s_per_iteration": statistics.median(per_iter),
        "s_per_iteration_runs": run_medians,
        "phases": phases,
        "peak_rss_mib": [r["peak_rss_mib"] for r in runs],
        "mean_reward_runs": mean_rewards,
        "logged_s_per_iteration": statistics.median(ph["logged_iteration"] for r in runs for ph in r["phases"][1:]) if "logged_iteration" in runs[0]["phases"][0] else None,
        "reward_per_iteration": [r["rewards"] for r in runs],
    }


def machine() -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}, Python {platform.python_version()}"


def report(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv, trl = results["lit-vine"], results["TRL"]
    ratio = trl["s_per_iteration"] / lv["s_per_iteration"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, colour in (("lit-vine", "tab:blue"), ("TRL", "tab:orange")):
        for k, curve in enumerate(results[name]["reward_per_iteration"]):
            ax.plot(range(1, len(curve) + 1), curve, color=colour, alpha=0.7, label=name if k == 0 else None)
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean reward of the iteration's 128 samples")
    ax.set_title(f"{results['method']} from checkpoints/sft-arith, one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "rewards.png", dpi=120)

    def spread(xs: list[float], fmt: str = ".2f") -> str:
        return f"{statistics.fmean(xs):{fmt}} ± {statistics.pstdev(xs):{fmt}}" if len(xs) > 1 else f"{xs[0]:{fmt}}"

    pairs = [t / v for t, v in zip(trl["s_per_iteration_runs"], lv["s_per_iteration_runs"])]  # the same seed, run back to back
    rows = [
        ("seconds per iteration (median)", f"{lv['s_per_iteration']:.2f}", f"{trl['s_per_iteration']:.2f}", f"{ratio:.2f}"),
        ("  per run (seed 0, 1, ...)", ", ".join(f"{s:.2f}" for s in lv["s_per_iteration_runs"]), ", ".join(f"{s:.2f}" for s in trl["s_per_iteration_runs"]),
         ", ".join(f"{r:.2f}" for r in pairs) + f" (median {statistics.median(pairs):.2f})"),
        ("  lit-vine's own `time/iteration` (median)", f"{lv['logged_s_per_iteration']:.2f}", "", ""),
    ]
    for p in PHASES:
        rows.append((f"  {p}", f"{lv['phases'][p]:.2f}", f"{trl['phases'][p]:.2f}", f"{trl['phases'][p] / max(lv['phases'][p], 1e-9):.2f}"))
    rows.append(("peak RSS (MiB)", f"{min(lv['peak_rss_mib']):.0f}-{max(lv['peak_rss_mib']):.0f}", f"{min(trl['peak_rss_mib']):.0f}-{max(trl['peak_rss_mib']):.0f}", ""))
    rows.append(("mean reward over the run, per seed (mean ± sd)", spread(lv["mean_reward_runs"], ".3f"), spread(trl["mean_reward_runs"], ".3f"), ""))
    table = "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    settings = "\n".join(f"| {name} | {a} | {b} | {'yes' if same else '**no**'} |" for name, a, b, same in SETTINGS + METHOD_SETTINGS[results["method"]])
    text = f"""# lit-vine vs TRL: the same {results['method']} work

`python benchmarks/vs_trl.py --method {results['method']} --runs {results['runs']} --iterations {results['iterations']}` on {results['machine']};
TRL {results['trl_version']}, transformers {results['transformers_version']}. {results['runs']} runs per trainer (seeds 0..{results['runs'] - 1}),
interleaved, each in its own process; {results['iterations'] - 1} measured iterations per run (the first is warm-up).
An iteration is timed from the start of its generation to the start of the next. "generation"
includes the reward, "scoring" the old and reference log-probs (and advantages), "training" the rest.

| | lit-vine | TRL | TRL / lit-vine |
|---|---|---|---|
{table}

![reward per iteration](rewards.png)

## Settings

| setting | lit-vine | TRL | matched |
|---|---|---|---|
{settings}
"""
    (out / "README.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(METHOD_SETTINGS), default="GRPO")
    parser.add_argument("--runs", type=int, default=3, help="runs per trainer (seeds 0..runs-1), interleaved")
    parser.add_argument("--iterations", type=int, default=11, help="iterations per run; the first is warm-up")
    parser.add_argument("--child", choices=["lit-vine", "TRL"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, str(REPO))
        return child(args.child, args.method, args.seed, args.iterations, args.out)

    import transformers
    import trl

    out_dir = OUT if args.method == "GRPO" else OUT / args.method.lower()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {"lit-vine": [], "TRL": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.runs):
            order = ["lit-vine", "TRL"] if seed % 2 == 0 else ["TRL", "lit-vine"]
            for side in order:
                out = Path(tmp) / f"{side}-{seed}.json"
                cmd = [sys.executable, __file__, "--child", side, "--method", args.method, "--seed", str(seed), "--iterations", str(args.iterations), "--out", str(out)]
                print(f"[vs_trl] {args.method}: {side}, seed {seed}", flush=True)
                subprocess.run(cmd, cwd=REPO, check=True)
                runs[side].append(json.loads(out.read_text()))
                print(f"[vs_trl]   median {statistics.median(runs[side][-1]['seconds'][1:]):.2f} s/iteration", flush=True)
    results = {"method": args.method, "runs": args.runs, "iterations": args.iterations, "machine": machine(), "trl_version": trl.__version__,
               "transformers_version": transformers.__version__, **{side: summarize(r) for side, r in runs.items()}, "raw": runs}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    report(results, out_dir)


if __name__ == "__main__":
    main()

"""How blame accuracy depends on the MC budget K, for a fixed policy and fixed responses.

    python benchmarks/blame_vs_k.py [--policy checkpoints/sft-credit] [--prompts 32] [--max-k 32]

Samples ``--prompts`` x 4 responses of the credit regime (``configs/credit.yaml``'s task and
sampling), estimates every state's value of every failed response once with ``--max-k``
continuations, and scores VinePPO's blame accuracy (``lit_vine.blame``) when only the first K of
them are used, for K = 1, 2, 4, 9, ``--max-k``. The largest K is the best this policy's responses
allow: if it stays below a target, no K will reach it. Writes ``benchmarks/blame_vs_k/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_vine import ArithmeticTask, HFEngine, SamplingParams, TaskDataModule
from lit_vine.advantages import vine_advantages
from lit_vine.blame import credit, step_means
from lit_vine.steps import step_token_ends

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "blame_vs_k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=str(REPO / "checkpoints" / "sft-credit"))
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-k", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(args.policy).eval(), AutoTokenizer.from_pretrained(args.policy)
    config = yaml.safe_load((REPO / "configs" / "credit.yaml").read_text())
    task = ArithmeticTask(**config["data"]["init_args"]["task"]["init_args"])
    problems = TaskDataModule(task, prompts_per_iteration=args.prompts).iteration_problems(0)
    engine = HFEngine()
    engine.setup(model, tokenizer)
    rl = config["model"]["init_args"]
    sampling = SamplingParams(rl["temperature"], rl["top_p"], rl["max_new_tokens"], n=rl["responses_per_prompt"])
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    responses = engine.generate(prompts, sampling, seed=0)

    failed = []  # (problem, prompt, response ids, step ends, first wrong step)
    eos = tokenizer.eos_token_id
    for problem, prompt, group in zip(problems, prompts, responses):
        for ids in group:
            text, score = task.score(ids, problem, tokenizer)
            wrong = task.first_wrong_step(text, problem) if score <= 0 else None
            steps = task.split_steps(text)
            if wrong is None or not steps:
                continue
            body = ids[:-1] if ids and ids[-1] == eos else ids
            ends = step_token_ends(body, steps, tokenizer)
            ends[-1] = len(ids)
            failed.append((problem, prompt, ids, ends, min(wrong, len(ends) - 1)))

    states = [(f, cut) for f in failed for cut in [0] + f[3][:-1]]
    continuations = engine.generate([f[1] + f[2][:cut] for f, cut in states], sampling.with_(n=args.max_k), seed=1)
    rewards = task.score_many([(f[2][:cut] + c, f[0]) for (f, cut), conts in zip(states, continuations) for c in conts], tokenizer)
    per_state = [[r for _, r in rewards[i * args.max_k : (i + 1) * args.max_k]] for i in range(len(states))]

    results = {}
    for k in sorted({1, 2, 4, 9, args.max_k}):
        accuracy, chance, zero_before_wrong = [], [], []
        i = 0
        for problem, prompt, ids, ends, wrong in failed:
            values = [sum(r[:k]) / k for r in per_state[i : i + len(ends)]]
            i += len(ends)
            advantages = vine_advantages([values], [ends], [0.0], max(ends))[0]
            per_step = step_means(advantages, ends)
            accuracy.append(credit(per_step, wrong))
            chance.append(1 / len(ends))
            zero_before_wrong.append(values[wrong] == 0)
        results[k] = {"blame_accuracy": sum(accuracy) / len(accuracy), "chance": sum(chance) / len(chance),
                      "share_V_before_wrong_step_is_0": sum(zero_before_wrong) / len(zero_before_wrong)}
    OUT.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    (OUT / "results.json").write_text(json.dumps({"failed_responses": len(failed), "states": len(states), "results": results}, indent=2) + "\n")
    lines = ["# Blame accuracy against the MC budget K", "", f"Machine: {machine}. Command: `python benchmarks/blame_vs_k.py --policy {Path(args.policy).name} "
             f"--prompts {args.prompts} --max-k {args.max_k}`.", "",
             f"{len(failed)} failed responses (of {args.prompts} x {sampling.n} at T = {sampling.temperature}), {len(states)} states, each valued once with {args.max_k} "
             "continuations; K uses the first K of them.", "",
             "| K | blame accuracy | chance | share of failed responses whose V(state before the wrong step) is estimated 0 |", "|---|---|---|---|"]
    lines += [f"| {k} | {r['blame_accuracy']:.3f} | {r['chance']:.3f} | {r['share_V_before_wrong_step_is_0']:.3f} |" for k, r in results.items()]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Monte Carlo rollouts and MATH grading: today's paths against the new ones, in one run.

    python benchmarks/mc_rollouts.py                 # all parts
    python benchmarks/mc_rollouts.py --part grading  # one part: quickstart, gsm8k, grading, quickstart_run

Rollouts (HFEngine ``decoding="generate"``, transformers' ``generate`` on n copies of each prompt,
against ``decoding="fork"``, one prefill per state forked to its K continuations, finished rows
leaving the batch), tokens generated per second, medians of ``--repeats`` interleaved runs:

(a) ``quickstart``: the quickstart's real MC requests of its first iteration (126 states of the
    shipped SFT policy's responses) x K = 4, up to 64 tokens;
(b) ``gsm8k``: GSM8K states, the paper prompt plus the first steps of gold solutions from
    ``../shared/data/gsm8k`` (about 330 tokens), x K = 9, 32 new tokens, through a random-init
    tiny Llama (4 x 128, 64 states) and a wider one (8 layers x 512, 32 states).

(c) ``grading``: an iteration's MC-like MATH answers at the paper's setting (``--prompts`` x 8
    responses x 6 states x K = 9 continuations whose answers repeat a few per prompt, most of them
    wrong), graded by ``MathGrader(workers=1, memoize=False)`` one comparison at a time (today's
    path) and by the memoizing, pooled ``MathGrader`` in one batched call (both warmed up first):
    seconds, and whether every verdict agrees.

(c2) ``continuous``: workload (a) through transformers' continuous batching (``generate_batch``,
    paged attention, ``attn_implementation="paged|sdpa"``) against ``decoding="fork"``: the other
    early-exit design the issue asked to measure.

(d) ``quickstart_run``: the whole quickstart once with each decoding: median seconds per phase and
    the test report (logs under ``benchmarks/mc_rollouts/logs``).

Results go to ``benchmarks/mc_rollouts/README.md`` and ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from common import REPO, SFT, quickstart_states, run_quickstart
from lit_vine import HFEngine, SamplingParams
from lit_vine.grading import MathGrader
from lit_vine.models import TinyConfig, build_tiny
from lit_vine.tasks.prompts import PAPER_TEMPLATE

OUT = REPO / "benchmarks" / "mc_rollouts"
DATA = REPO.parent / "shared" / "data"
DECODINGS = {
    decoding: ["--trainer.callbacks", f"[{{class_path: lit_vine.RolloutCallback, init_args: {{engine: {{class_path: lit_vine.HFEngine, init_args: {{decoding: {decoding}}}}}}}}}, {{class_path: lit_vine.callbacks.TestReport}}]"]
    for decoding in ("generate", "fork")
}


def gsm8k_states(tokenizer, count: int = 64, seed: int = 0) -> list[list[int]]:
    """Paper-prompted GSM8K questions, each followed by the first 0..n-1 lines of its gold solution."""
    rows = [json.loads(line) for line in (DATA / "gsm8k" / "test.jsonl").read_text().splitlines()]
    rng = random.Random(seed)
    states = []
    for row in rng.sample(rows, count):
        lines = re.sub(r"<<.*?>>", "", row["answer"]).split("\n")[:-1]
        prefix = "\n".join(lines[: rng.randint(0, max(0, len(lines) - 1))])
        states.append(tokenizer(PAPER_TEMPLATE.replace("{query}", row["question"]) + " " + prefix).input_ids)
    return states


def bench_engines(model, tokenizer, states, params, repeats: int) -> dict:
    engines = {decoding: HFEngine(decoding=decoding) for decoding in ("generate", "fork")}
    for engine in engines.values():
        engine.setup(model, tokenizer)
    runs = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, engine in engines.items():  # interleaved
            start = time.perf_counter()
            out = engine.generate(states, params, seed=repeat)
            runs[name].append((time.perf_counter() - start, sum(len(c) for group in out for c in group)))
    result = {"states": len(states), "prompt_tokens_mean": sum(map(len, states)) / len(states), "k": params.n, "max_new_tokens": params.max_new_tokens}
    for name, timings in runs.items():
        result[name] = {"seconds_median": statistics.median(t for t, _ in timings), "tokens_per_s_median": statistics.median(n / t for t, n in timings),
                        "seconds_all": [round(t, 2) for t, _ in timings]}
    result["speedup_tokens_per_s"] = result["fork"]["tokens_per_s_median"] / result["generate"]["tokens_per_s_median"]
    result["speedup_seconds"] = result["generate"]["seconds_median"] / result["fork"]["seconds_median"]
    return result


def part_continuous(repeats: int) -> dict:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(SFT).eval(), AutoTokenizer.from_pretrained(SFT)
    paged = AutoModelForCausalLM.from_pretrained(SFT, attn_implementation="paged|sdpa").eval()
    states, k = quickstart_states(model, tokenizer), 4
    config = GenerationConfig(max_new_tokens=64, do_sample=True, temperature=0.6, top_p=0.9,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    fork = HFEngine()
    fork.setup(model, tokenizer)
    runs = {"continuous": [], "fork": []}
    for repeat in range(repeats):
        torch.manual_seed(repeat)
        start = time.perf_counter()
        with torch.no_grad():
            out = paged.generate_batch(inputs=[s for s in states for _ in range(k)], generation_config=config, progress_bar=False)
        runs["continuous"].append((time.perf_counter() - start, sum(len(o.generated_tokens) for o in out.values())))
        start = time.perf_counter()
        out = fork.generate(states, SamplingParams(0.6, 0.9, 64, n=k), seed=repeat)
        runs["fork"].append((time.perf_counter() - start, sum(len(c) for group in out for c in group)))
    result = {name: {"seconds_median": statistics.median(t for t, _ in r), "tokens_per_s_median": statistics.median(n / t for t, n in r)} for name, r in runs.items()}
    result["fork_over_continuous"] = result["fork"]["tokens_per_s_median"] / result["continuous"]["tokens_per_s_median"]
    return result


def part_quickstart_run(iterations: int) -> dict:
    return {name: run_quickstart(name, extra, OUT / "logs", iterations) for name, extra in DECODINGS.items()}


def part_quickstart(repeats: int) -> dict:
    model, tokenizer = AutoModelForCausalLM.from_pretrained(SFT).eval(), AutoTokenizer.from_pretrained(SFT)
    return bench_engines(model, tokenizer, quickstart_states(model, tokenizer), SamplingParams(0.6, 0.9, 64, n=4), repeats)


def part_gsm8k(repeats: int) -> dict:
    torch.manual_seed(0)
    tiny, tokenizer = build_tiny(TinyConfig(max_position_embeddings=1024))
    wide = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    params = SamplingParams(0.6, 0.9, 32, n=9)
    # fewer states through the wide model: its today's-path repeats take minutes each
    return {name: bench_engines(model.eval(), tokenizer, gsm8k_states(tokenizer, count), params, repeats) for name, model, count in (("tiny_4x128", tiny, 64), ("wide_8x512", wide, 32))}


def mc_like_answers(prompts: int, seed: int = 0) -> list[tuple[str, str]]:
    """(response, gold) pairs as one iteration's MC continuations give them at the paper's setting:
    per prompt 8 responses x 6 states x K = 9 continuations, whose final answers come from a small
    pool (the right one and 5 wrong ones, other problems' answers), mostly wrong."""
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    answers = [r["answer"] for r in rows]
    rng = random.Random(seed)
    pairs = []
    for row in rng.sample(rows, prompts):
        pool = [row["answer"]] + rng.sample(answers, 5)
        for _ in range(8 * 6 * 9):
            pairs.append((f"So the answer is $\\boxed{{{rng.choices(pool, weights=[2, 3, 2, 1, 1, 1])[0]}}}$.", row["answer"]))
    return pairs


def part_grading(prompts: int) -> dict:
    pairs = mc_like_answers(prompts)
    one, fast = MathGrader(workers=1, memoize=False), MathGrader()
    for grader in (one, fast):  # workers started (sympy imported) before timing
        grader.grade_many([("$\\boxed{\\frac{1}{2}}$", "0.5")] * grader.workers * 2)
        grader._verdicts.clear()
    start = time.perf_counter()
    before = [one(response, gold) for response, gold in pairs]
    today = time.perf_counter() - start
    start = time.perf_counter()
    after = fast.grade_many(pairs)
    new = time.perf_counter() - start
    result = {"comparisons": len(pairs), "prompts": prompts, "distinct": len(set(pairs)), "correct_share": sum(before) / len(pairs),
              "workers": fast.workers, "one_at_a_time_s": today, "memoized_pool_s": new, "speedup": today / new, "identical_verdicts": before == after}
    one.close()
    fast.close()
    return result


def write_report(results: dict) -> None:
    lines = ["# Monte Carlo rollouts and MATH grading", "", f"Machine: {results['machine']}. Command: `python benchmarks/mc_rollouts.py`.", ""]

    def engine_rows(name: str, r: dict) -> list[str]:
        return [f"| {name} | {r['states']} x K = {r['k']}, prompts {r['prompt_tokens_mean']:.0f} tokens, up to {r['max_new_tokens']} new | "
                f"{r['generate']['seconds_median']:.2f} s, {r['generate']['tokens_per_s_median']:.0f} tok/s | "
                f"{r['fork']['seconds_median']:.2f} s, {r['fork']['tokens_per_s_median']:.0f} tok/s | **{r['speedup_tokens_per_s']:.2f}x** |"]

    if "quickstart" in results or "gsm8k" in results:
        lines += ["## Rollouts: `HFEngine(decoding=\"generate\")` (before) against `decoding=\"fork\"` (now)", "",
                  "Medians of the interleaved repeats; the speed-up is in tokens generated per second.", "",
                  "| workload | size | generate | fork | speed-up |", "|---|---|---|---|---|"]
        if "quickstart" in results:
            lines += engine_rows("(a) quickstart MC, SFT policy (4 x 128)", results["quickstart"])
        for name, r in results.get("gsm8k", {}).items():
            lines += engine_rows(f"(b) GSM8K states, random-init {name}", r)
        lines.append("")
    if "continuous" in results:
        c = results["continuous"]
        lines += ["transformers' continuous batching (`generate_batch`, `attn_implementation=\"paged|sdpa\"`) on workload (a): "
                  f"{c['continuous']['seconds_median']:.2f} s, {c['continuous']['tokens_per_s_median']:.0f} tok/s, against `fork` "
                  f"{c['fork']['seconds_median']:.2f} s, {c['fork']['tokens_per_s_median']:.0f} tok/s: `fork` is **{c['fork_over_continuous']:.1f}x** faster on this CPU, "
                  "so it is the default and continuous batching is not kept as an engine (its scheduler and paged-attention "
                  "bookkeeping dominate with a 4 x 128 model; on a GPU with a large model the balance may differ).", ""]
    if "quickstart_run" in results:
        runs = results["quickstart_run"]
        lines += ["## The quickstart with each decoding (one after the other, same seeds)", "",
                  "| decoding | wall | s/iter generation | s/iter value estimation | s/iter iteration | test greedy before -> after | pass@1 before -> after |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            t, m = r["test"], r["median_s_per_iteration"]
            lines.append(f"| {name} | {r['wall_s'] / 60:.1f} min | {m['generation']:.2f} | {m['value_estimation']:.2f} | {m['iteration']:.2f} "
                         f"| {100 * t['before']['greedy_acc']:.1f} -> {100 * t['after']['greedy_acc']:.1f} % | {100 * t['before']['pass@1']:.1f} -> {100 * t['after']['pass@1']:.1f} % |")
        g, f = (runs[name]["median_s_per_iteration"]["value_estimation"] for name in ("generate", "fork"))
        lines += ["", f"Median `time/value_estimation`: {g:.2f} s -> {f:.2f} s, **{g / f:.2f}x** less.", ""]
    if "grading" in results:
        g = results["grading"]
        lines += ["## MATH grading", "",
                  f"{g['comparisons']} MC-like (response, gold) pairs of {g['prompts']} prompts ({g['distinct']} distinct; {100 * g['correct_share']:.0f} % correct): "
                  f"one math-verify worker, one comparison at a time, {g['one_at_a_time_s']:.1f} s; memoized verdicts and {g['workers']} "
                  f"workers in one batched call, {g['memoized_pool_s']:.2f} s: **{g['speedup']:.0f}x**, identical verdicts: {g['identical_verdicts']}."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["quickstart", "gsm8k", "continuous", "grading", "quickstart_run", "all", "report"], default="all")
    parser.add_argument("--iterations", type=int, default=40, help="of the quickstart_run part")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=64, help="MATH prompts of the grading part (x 432 comparisons)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    parts = {"quickstart": lambda: part_quickstart(args.repeats), "gsm8k": lambda: part_gsm8k(args.repeats),
             "continuous": lambda: part_continuous(args.repeats), "grading": lambda: part_grading(args.prompts),
             "quickstart_run": lambda: part_quickstart_run(args.iterations)}
    for name, run in parts.items():
        if args.part in (name, "all"):
            results[name] = run()
            print(name, json.dumps(results[name], indent=2), flush=True)
    results["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results)


if __name__ == "__main__":
    main()

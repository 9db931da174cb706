"""vLLM's CPU build against HFEngine on this machine: MC rollout throughput and the quickstart.

    python benchmarks/engines.py                    # both parts; run it in the vLLM venv (README)
    python benchmarks/engines.py --part mc           # (a) only
    python benchmarks/engines.py --part quickstart   # (b) only
    python benchmarks/engines.py --part report       # the report from results.json

(a) **MC workload**: the quickstart's real Monte Carlo requests of its first iteration (the shipped
SFT policy's 4 responses to each of iteration 0's 32 prompts, split into steps, identical states
once) x K = 4 continuations of up to 64 tokens at T = 0.6, top_p 0.9, sent as one call to each
engine in the same process: tokens generated per second, medians of ``--repeats`` interleaved runs.
(b) **The quickstart**, once per engine, one after the other, same seeds: median seconds per
iteration by phase (from its TensorBoard logs) and the test report.

Results go to ``benchmarks/engines/README.md`` and ``results.json`` (logs under ``benchmarks/engines/logs``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from common import PHASES, REPO, SFT, quickstart_states, run_quickstart
from lit_vine import HFEngine, SamplingParams
from lit_vine.rollout.vllm import VLLMEngine

OUT = REPO / "benchmarks" / "engines"
ENGINES = {"HFEngine": [], "VLLMEngine": ["--config", "configs/engines/vllm_cpu.yaml"]}


def bench_mc(repeats: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy, tokenizer = AutoModelForCausalLM.from_pretrained(SFT).eval(), AutoTokenizer.from_pretrained(SFT)
    states = quickstart_states(policy, tokenizer)
    engines = {"HFEngine": HFEngine(), "VLLMEngine": VLLMEngine(dtype="float32", kv_cache_gib=0.5, enforce_eager=True)}
    for engine in engines.values():
        engine.setup(policy, tokenizer)
    params = SamplingParams(0.6, 0.9, 64, n=4)
    engines["VLLMEngine"].generate(states[:1], params, seed=0)  # build it before timing
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, engine in engines.items():  # interleaved
            start = time.perf_counter()
            out = engine.generate(states, params, seed=repeat)
            runs[name].append((time.perf_counter() - start, sum(len(c) for group in out for c in group)))
    result = {"states": len(states), "k": 4, "max_new_tokens": 64, "repeats": repeats, "torch_threads": torch.get_num_threads()}
    for name, timings in runs.items():
        result[name] = {
            "seconds_median": statistics.median(t for t, _ in timings),
            "tokens_per_s_median": statistics.median(n / t for t, n in timings),
            "tokens_per_s_all": [round(n / t, 1) for t, n in timings],
        }
    result["vllm_over_hf_tokens_per_s"] = result["VLLMEngine"]["tokens_per_s_median"] / result["HFEngine"]["tokens_per_s_median"]
    return result


def bench_quickstart(iterations: int) -> dict:
    return {name: run_quickstart(name, extra, OUT / "logs", iterations) for name, extra in ENGINES.items()}


def write_report(results: dict, machine: str) -> None:
    lines = ["# vLLM (CPU build) against HFEngine", "", f"Machine: {machine}. Command: `python benchmarks/engines.py` in the vLLM venv (README).", ""]
    mc = results.get("mc")
    if mc:
        lines += [
            f"## (a) MC workload: {mc['states']} states x K = {mc['k']}, up to {mc['max_new_tokens']} tokens, one call, medians of {mc['repeats']} interleaved repeats",
            "", "| engine | seconds | tokens/s | each repeat (tokens/s) |", "|---|---|---|---|",
        ]
        for name in ENGINES:
            r = mc[name]
            lines.append(f"| {name} | {r['seconds_median']:.2f} | {r['tokens_per_s_median']:.0f} | {', '.join(map(str, r['tokens_per_s_all']))} |")
        lines += ["", f"vLLM / HF tokens per second: **{mc['vllm_over_hf_tokens_per_s']:.2f}x** (torch threads in the process: {mc['torch_threads']}).", ""]
    qs = results.get("quickstart")
    if qs:
        lines += ["## (b) The quickstart, once per engine (same seeds, one after the other)", "",
                  "| engine | wall | " + " | ".join(f"s/iter {p}" for p in PHASES) + " | test greedy before -> after | pass@1 before -> after | probe max (logged iterations) |",
                  "|---" * (3 + len(PHASES) + 2) + "|"]
        for name in ENGINES:
            r = qs[name]
            t, phases = r["test"], r["median_s_per_iteration"]
            probe = "-" if r["probe_max"] is None else f"{r['probe_max']:.1e} ({r['probe_logged']})"
            lines.append(
                f"| {name} | {r['wall_s'] / 60:.1f} min | " + " | ".join(f"{phases.get(p, 0):.2f}" for p in PHASES)
                + f" | {100 * t['before']['greedy_acc']:.1f} -> {100 * t['after']['greedy_acc']:.1f} %"
                + f" | {100 * t['before']['pass@1']:.1f} -> {100 * t['after']['pass@1']:.1f} % | {probe} |"
            )
        hf, vllm = (qs[name]["median_s_per_iteration"] for name in ENGINES)
        lines += ["", "HF seconds / vLLM seconds (above 1: vLLM is faster): " + ", ".join(
            f"{p} {hf[p] / vllm[p]:.2f}x" for p in PHASES if p in hf and p in vllm) + "."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["mc", "quickstart", "all", "report"], default="all")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.part in ("mc", "all"):
        results["mc"] = bench_mc(args.repeats)
        print(json.dumps(results["mc"], indent=2))
    if args.part in ("quickstart", "all"):
        results["quickstart"] = bench_quickstart(args.iterations)
        print(json.dumps(results["quickstart"], indent=2))
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    results["machine"] = machine
    path.write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, machine)


if __name__ == "__main__":
    main()

"""How blame accuracy depends on the MC budget K, for a fixed policy and fixed responses, and what
the regime's failures look like to each kind of method.

    python benchmarks/blame_vs_k.py [--config configs/credit_budget.yaml] [--policy <the config's>]
        [--prompts 32] [--max-k 32] [--reference-k 32] [--out benchmarks/credit/blame_vs_k]

Samples ``--prompts`` x G responses with the config's task and sampling. The premise, counted on
them: how many succeed, how many prompts have no right response (a GRPO/RLOO group without signal),
why the failed ones failed (a skipped carry check, the length budget, another error). Then every
state of every failed response is valued once with ``--max-k`` continuations, and VinePPO's blame
accuracy (``lit_vine.blame``) is scored when only the first K of them are used, K = 1, 2, 4, 9,
``--max-k``, on these measures:

- *first wrong step* (the training logs' ``blame/accuracy``): the step after which the response
  could no longer be right (``Task.first_wrong_step``);
- *decisive step*: the step whose value drop was largest, by ``--reference-k`` further continuations
  from every state, drawn apart from the first (the step that made success unlikely; it is the first
  wrong step unless success was already unlikely before it). Responses that no reference
  continuation from any state gets right have no decisive step and are left out of this measure;
- *value-weighted*: the first-wrong-step measure with each failed response weighted by the
  reference value of the state before its first wrong step, the success that step threw away (the
  size of its true advantage): a step that lost a 0.5 chance counts 25 times one that lost 0.02.
  The weights come from the reference continuations, so they do not favour what the estimate saw;
- *where seen*: the first-wrong-step measure over the failed responses whose K continuations from
  the state before the wrong step include a success. Where none does, every state up to the wrong
  step may be valued 0 and no K-sample estimate can single the step out: the share of such
  responses is MC resolution, not the credit rule.

The largest K is the best this policy's responses allow: if it stays below a target, no K will
reach it. Writes ``<out>/README.md`` and ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from lit_vine import ArithmeticTask, HFEngine, SamplingParams, TaskDataModule
from lit_vine.advantages import vine_advantages
from lit_vine.blame import credit, step_means
from lit_vine.steps import step_token_ends
from lit_vine.tasks.arithmetic import Chain
from lit_vine.tasks.base import Problem

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Failure:
    """A failed response, its step boundaries (token ends) and first wrong step."""

    problem: Problem
    prompt: list[int]
    ids: list[int]
    ends: list[int]
    wrong: int

    def states(self) -> list[list[int]]:
        """Prompt plus response prefix of every state s_0..s_{n-1}."""
        return [self.prompt + self.ids[:cut] for cut in [0] + self.ends[:-1]]


def cause(steps: list[str], failure: Failure) -> str:
    """Why a response (split into ``steps``) failed: at its first wrong step, a quick line with a
    carry, the length budget (the step is right but nothing correct fits after it), or anything else."""
    step = steps[failure.wrong].lstrip("\n").partition("\n")[0]
    chain = Chain.parse(failure.problem.question)
    if failure.wrong < len(chain.ops) and "~" in step and failure.wrong not in chain.carry_free():
        return "skipped carry check"
    if chain.first_wrong_step(steps) != failure.wrong:
        return "length budget"
    return "other error"


def step_advantages(rewards: list[list[float]], ends: list[int]) -> list[float]:
    """VinePPO's mean advantage per step from the rewards of each state's continuations (the
    response failed, so its final reward is 0)."""
    values = [sum(r) / len(r) for r in rewards]
    return step_means(vine_advantages([values], [ends], [0.0], max(ends))[0], ends)


def decisive_step(reference: list[float], wrong: int) -> int | None:
    """The step at or before the first wrong one whose reference advantage is lowest (the largest
    value drop); ``None`` where no step lowered the value at all (success unlikely from the start)."""
    drops = reference[: wrong + 1]
    return None if min(drops) >= 0 else drops.index(min(drops))


def mc_rewards(engine: HFEngine, task: ArithmeticTask, tokenizer, failures: list[Failure], sampling: SamplingParams, k: int, seed: int) -> list[list[list[float]]]:
    """Per failure, per state: the rewards of ``k`` continuations."""
    states = [(f, s) for f in failures for s in f.states()]
    continuations = engine.generate([s for _, s in states], sampling.with_(n=k), seed=seed)
    rewards = task.score_many([(s[len(f.prompt):] + c, f.problem) for (f, s), conts in zip(states, continuations) for c in conts], tokenizer)
    flat = [[r for _, r in rewards[i * k : (i + 1) * k]] for i in range(len(states))]
    out, i = [], 0
    for f in failures:
        out.append(flat[i : i + len(f.ends)])
        i += len(f.ends)
    return out


def sample_failures(task: ArithmeticTask, engine: HFEngine, tokenizer, problems: list[Problem], sampling: SamplingParams) -> tuple[list[Failure], dict]:
    """The failed responses among ``sampling.n`` per problem, with the premise's counts: right
    responses, prompts without one, and the failures' causes."""
    prompts = [task.prompt_ids(p, tokenizer) for p in problems]
    failures, causes, right, groups_without_right = [], Counter(), 0, 0
    eos = tokenizer.eos_token_id
    for problem, prompt, group in zip(problems, prompts, engine.generate(prompts, sampling, seed=0)):
        scored = [task.score(ids, problem, tokenizer) for ids in group]
        right += sum(score > 0 for _, score in scored)
        groups_without_right += all(score <= 0 for _, score in scored)
        for ids, (text, score) in zip(group, scored):
            wrong = task.first_wrong_step(text, problem) if score <= 0 else None
            steps = task.split_steps(text)
            if wrong is None or not steps:
                continue
            body = ids[:-1] if ids and ids[-1] == eos else ids
            ends = step_token_ends(body, steps, tokenizer)
            ends[-1] = len(ids)
            failures.append(Failure(problem, prompt, ids, ends, min(wrong, len(ends) - 1)))
            causes[cause(steps, failures[-1])] += 1
    counts = {"responses": len(problems) * sampling.n, "right": right, "prompts": len(problems),
              "prompts_without_a_right_response": groups_without_right, "failed_responses": len(failures), "causes": dict(causes)}
    return failures, counts


def blame_by_k(failures: list[Failure], estimate: list, reference: list, ks: list[int]) -> tuple[dict, dict]:
    """Per K: the four blame measures, how often V(s before the wrong step) is estimated 0, and
    the chance that K continuations see a success from there; and the reference's own figures."""
    decisive = [decisive_step(step_advantages(r, f.ends), f.wrong) for f, r in zip(failures, reference)]
    lost = [sum(r[f.wrong]) / len(r[f.wrong]) for f, r in zip(failures, reference)]  # reference V(s_w)
    results = {}
    for k in ks:
        per_step = [step_advantages([r[:k] for r in rewards], f.ends) for f, rewards in zip(failures, estimate)]
        scored = [(p, d) for p, d in zip(per_step, decisive) if d is not None]
        # the wrong step's value drop is visible to the estimate only where it saw a success before it
        seen = [(p, f) for p, f, rewards in zip(per_step, failures, estimate) if sum(rewards[f.wrong][:k]) > 0]
        results[k] = {
            "first_wrong_step": sum(credit(p, f.wrong) for p, f in zip(per_step, failures)) / len(failures),
            "decisive_step": sum(credit(p, d) for p, d in scored) / len(scored) if scored else float("nan"),
            "value_weighted": sum(credit(p, f.wrong) * w for p, f, w in zip(per_step, failures, lost)) / sum(lost) if sum(lost) else float("nan"),
            "first_wrong_step_where_seen": sum(credit(p, f.wrong) for p, f in seen) / len(seen) if seen else float("nan"),
            "share_V_before_wrong_step_is_0": sum(sum(r[f.wrong][:k]) == 0 for f, r in zip(failures, estimate)) / len(failures),
            # where no continuation succeeds, the wrong step's value drop is invisible to the estimate
            "resolution_bound": sum(1 - (1 - v) ** k for v in lost) / len(lost),
        }
    reference_figures = {
        "states": sum(len(f.ends) for f in failures), "chance": sum(1 / len(f.ends) for f in failures) / len(failures),
        "decisive_is_first_wrong": sum(d == f.wrong for d, f in zip(decisive, failures)),
        "without_decisive_step": sum(d is None for d in decisive), "mean_reference_value_before_wrong_step": sum(lost) / len(lost),
    }
    return results, reference_figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/credit_budget.yaml")
    parser.add_argument("--policy", default=None, help="default: the config's policy")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-k", type=int, default=32)
    parser.add_argument("--reference-k", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "credit" / "blame_vs_k")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = yaml.safe_load((REPO / args.config).read_text())
    rl = config["model"]["init_args"]
    policy = args.policy or str(REPO / rl["policy"])
    model, tokenizer = AutoModelForCausalLM.from_pretrained(policy).eval(), AutoTokenizer.from_pretrained(policy)
    task = ArithmeticTask(**config["data"]["init_args"]["task"]["init_args"])
    problems = TaskDataModule(task, prompts_per_iteration=args.prompts).iteration_problems(0)
    engine = HFEngine()
    engine.setup(model, tokenizer)
    sampling = SamplingParams(rl["temperature"], rl["top_p"], rl["max_new_tokens"], n=rl["responses_per_prompt"])
    failures, counts = sample_failures(task, engine, tokenizer, problems, sampling)
    estimate = mc_rewards(engine, task, tokenizer, failures, sampling, args.max_k, seed=1)
    reference = mc_rewards(engine, task, tokenizer, failures, sampling, args.reference_k, seed=2)
    ks = sorted(k for k in {1, 2, 4, 9, args.max_k} if k <= args.max_k)
    results, reference_figures = blame_by_k(failures, estimate, reference, ks)
    write_report(args, {**counts, **reference_figures}, results, sampling)


def write_report(args: argparse.Namespace, summary: dict, results: dict, sampling: SamplingParams) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({**summary, "results": results}, indent=2) + "\n")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    s = summary
    lines = [
        "# Blame accuracy against the MC budget K", "",
        f"Machine: {machine}. Command: `python benchmarks/blame_vs_k.py {shlex.join(sys.argv[1:])}`.", "",
        f"**The premise, on the policy's own responses** ({s['prompts']} prompts x {sampling.n} at T = {sampling.temperature}): "
        f"{s['right']} of {s['responses']} right ({100 * s['right'] / s['responses']:.1f} %); {s['prompts_without_a_right_response']} of "
        f"{s['prompts']} prompts have no right response (no GRPO/RLOO signal). Failed responses by the cause at their first wrong step: "
        + ", ".join(f"{c} {n}" for c, n in sorted(s["causes"].items(), key=lambda kv: -kv[1])) + ".", "",
        (f"{s['failed_responses']} failed responses, {s['states']} states, each valued once with {args.max_k} continuations "
        f"(K uses the first K of them) and, apart from those, with {args.reference_k} reference continuations. The decisive step (largest "
        f"reference value drop) is the first wrong step in {s['decisive_is_first_wrong']} of them; {s['without_decisive_step']} have none "
        "(no reference continuation from any of their states is right) and are left out of that measure. The mean reference value "
        f"of the state before the first wrong step (the success it threw away) is {s['mean_reference_value_before_wrong_step']:.3f}."), "",
        ("| K | blame accuracy: first wrong step | decisive step | value-weighted | first wrong step, where the estimate saw a success before it | chance | "
        "share of failed responses whose V(state before the wrong step) is estimated 0 | "
        "chance that K continuations see a success from that state (by its reference value) |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {k} | {r['first_wrong_step']:.3f} | {r['decisive_step']:.3f} | {r['value_weighted']:.3f} | {r['first_wrong_step_where_seen']:.3f} | {s['chance']:.3f} | {r['share_V_before_wrong_step_is_0']:.3f} | "
              f"{r['resolution_bound']:.3f} |" for k, r in results.items()]
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""How well does each method know the value of a reasoning step?

Ground truth V*(s) for the states of sampled responses comes from many Monte Carlo rollouts
(``--truth-k``). Against it we score VinePPO's estimate (K rollouts, as in training) for several
K, and a PPO critic (value head on the SFT body) trained on lambda = 1 returns of the same
policy for ``--critic-iterations`` iterations, as VC-PPO's value pretraining does.

    python benchmarks/value_error.py            # writes benchmarks/value_error/README.md and a plot
"""

from __future__ import annotations

import argparse
import platform
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lit_vine.advantages import gae  # noqa: E402
from lit_vine.experience import pad_batch, position_ids  # noqa: E402
from lit_vine.losses import value_loss  # noqa: E402
from lit_vine.models import ValueModel, load_policy_and_tokenizer  # noqa: E402
from lit_vine.rollout.engine import HFEngine, SamplingParams  # noqa: E402
from lit_vine.steps import step_token_ends  # noqa: E402
from lit_vine.tasks.arithmetic import ArithmeticTask  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def sample(engine, task, tok, problems, params, seed):
    prompts = [task.prompt_ids(p, tok) for p in problems]
    outs = engine.generate(prompts, params, seed)
    return prompts, [o[0] for o in outs]


def states_of(task, tok, prompt, response):
    """Token prefixes (prompt + response[:cut]) of the states s_0..s_{n-1}."""
    body = response[:-1] if response and response[-1] == tok.eos_token_id else response
    text = tok.decode(response, skip_special_tokens=True)
    ends = step_token_ends(body, task.split_steps(text), tok)
    return [0] + ends[:-1]


def mc_values(engine, task, tok, prefixes, problems, cuts, k, params, seed):
    outs = engine.generate(prefixes, params.with_(n=k), seed)
    values = []
    for prefix_cut, problem, conts, prefix in zip(cuts, problems, outs, prefixes):
        response_prefix = prefix[len(prefix) - prefix_cut :] if prefix_cut else []
        values.append(np.mean([task.score(response_prefix + c[: params.max_new_tokens - prefix_cut], problem, tok)[1] for c in conts]))
    return np.array(values)


def train_critic(policy_name, engine, task, tok, params, iterations, prompts_per_iteration, lr):
    critic = ValueModel(policy_name)
    opt = torch.optim.AdamW(critic.parameters(), lr=lr)
    train = task.problems("train")
    for it in range(iterations):
        problems = train[it * prompts_per_iteration : (it + 1) * prompts_per_iteration]
        prompts, responses = sample(engine, task, tok, problems, params, seed=10_000 + it)
        ids, att, mask = pad_batch(prompts, responses, tok.pad_token_id)
        T = mask.shape[1]
        scores = torch.tensor([task.score(r, p, tok)[1] for r, p in zip(responses, problems)])
        rewards = torch.zeros_like(mask)
        rewards[torch.arange(len(scores)), mask.sum(-1).long() - 1] = scores
        with torch.no_grad():
            old = critic(ids, att, position_ids(att))[:, -T - 1 : -1] * mask
        _, returns = gae(rewards, old, mask, gamma=1.0, lam=1.0)
        for _ in range(2):
            values = critic(ids, att, position_ids(att))[:, -T - 1 : -1]
            loss, _ = value_loss(values, old, returns, mask, clip=0.2)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(critic.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
    return critic


@torch.no_grad()
def critic_values(critic, prefixes, pad_id):
    """V(s) for each state: the value head on the state's last token."""
    out = []
    for prefix in prefixes:
        ids = torch.tensor([prefix])
        out.append(float(critic(ids, torch.ones_like(ids), position_ids(torch.ones_like(ids)))[0, -1]))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", default=str(REPO / "checkpoints" / "sft-arith"))
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--truth-k", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 4, 9])
    parser.add_argument("--critic-iterations", type=int, default=40)
    parser.add_argument("--critic-prompts", type=int, default=64)
    parser.add_argument("--critic-lr", type=float, default=1e-4)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "value_error")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    policy, tok = load_policy_and_tokenizer(args.policy)
    engine = HFEngine()
    engine.setup(policy, tok)
    task = ArithmeticTask()
    params = SamplingParams(temperature=0.6, top_p=0.9, max_new_tokens=64)
    problems = task.problems("test")[: args.prompts]
    prompts, responses = sample(engine, task, tok, problems, params, seed=1)

    prefixes, owners, cuts = [], [], []
    for prompt, response, problem in zip(prompts, responses, problems):
        for cut in states_of(task, tok, prompt, response):
            prefixes.append(prompt + response[:cut])
            owners.append(problem)
            cuts.append(cut)
    truth = mc_values(engine, task, tok, prefixes, owners, cuts, args.truth_k, params, seed=2)

    rows, errors = [], {}
    for k in args.ks:
        estimate = mc_values(engine, task, tok, prefixes, owners, cuts, k, params, seed=100 + k)
        errors[f"VinePPO MC, K={k}"] = estimate - truth
    critic = train_critic(args.policy, engine, task, tok, params, args.critic_iterations, args.critic_prompts, args.critic_lr)
    errors[f"PPO critic ({args.critic_iterations} it.)"] = critic_values(critic, prefixes, tok.pad_token_id) - truth

    # Ranking: for two states of one response, does the estimate order them like the truth?
    for name, err in errors.items():
        est = truth + err
        mae = np.mean(np.abs(err))
        corr = np.corrcoef(est, truth)[0, 1] if np.std(est) > 0 else float("nan")
        rows.append(f"| {name} | {mae:.3f} | {np.sqrt(np.mean(err**2)):.3f} | {corr:.2f} |")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = list(errors)
    ax.bar(range(len(names)), [np.mean(np.abs(errors[n])) for n in names], color=["tab:green"] * len(args.ks) + ["tab:red"])
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set_ylabel(f"mean |V - V*| (V*: {args.truth_k} MC rollouts)")
    ax.set_title(f"Value-estimate error on {len(truth)} reasoning states")
    fig.tight_layout()
    fig.savefig(args.out / "value_error.png", dpi=110)

    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    text = (
        "# Value-estimate error against a many-sample Monte Carlo ground truth\n\n"
        f"`python benchmarks/value_error.py` on {machine}: {len(truth)} states (s_0..s_(n-1)) of "
        f"{len(responses)} responses of the shipped SFT policy to test problems; ground truth V* = mean "
        f"reward of {args.truth_k} continuations; mean V* = {truth.mean():.3f}.\n\n"
        "| estimator | MAE | RMSE | correlation with V* |\n|---|---|---|---|\n" + "\n".join(rows)
        + "\n\n![value error](value_error.png)\n"
    )
    (args.out / "README.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

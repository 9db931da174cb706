"""Methods compared on one run config: same SFT checkpoint, prompts, episodes and evaluation.

    python benchmarks/study.py --config configs/credit_budget.yaml --out benchmarks/credit \\
        --methods VinePPO PPO VC-PPO GRPO RLOO --sweep-lrs 3e-6 1e-5 3e-5 --seeds 0 1 2 --jobs 2
    python benchmarks/study.py ... --report-only        # the report from existing logs

Each run is ``lit-vine fit --config <config> --config configs/methods/<m>.yaml`` with its seed and
learning rate; with seed k every method sees the same prompts in the same order. With
``--sweep-lrs``, every method first gets the same short learning-rate sweep (one seed,
``--sweep-iterations``), and the rate with the best final validation pass@1 (ties: the smaller
rate) is used for its seeded runs. Logs go to ``<out>/logs/<method>/<run>``; the report
(``<out>/README.md``) has the sweep, the table, the plots (accuracy against policy optimizer
steps and against wall-clock), the machine and the exact commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "VinePPO": "vineppo",
    "PPO": "ppo",
    "VC-PPO": "vcppo",
    "GRPO": "grpo",
    "RLOO": "rloo",
    "REINFORCE": "reinforce",
    "RestEM": "restem",
    "DPO+": "dpo_plus",
    "SPO-chain": "spo_chain",
    "SPO-tree": "spo_tree",
    "VAPO": "vapo",
}
# Overrides after a method's preset. SPO-tree's preset is the paper's (6-6-6 trees of 30-token
# segments, 1 epoch): on these tasks' 20-80-token answers 30-token segments end early, so the study
# scales the tree (3-2-2 of 12-token segments, the last depth to the end) and keeps the config's
# epochs and optimizer steps per iteration (ppo_epochs 2, 4 mini-batches of the kept edges), as
# every other method.
OVERRIDES = {
    "SPO-tree": ["--model.algorithm.branching=[3, 2, 2]", "--model.algorithm.segment_tokens=12",
                 "--model.init_args.ppo_epochs=2", "--model.init_args.responses_per_prompt=4", "--model.init_args.mini_batch_size=32"],
}
METRIC = "val/pass@1"
PHASES = ("generation", "scoring", "value_estimation", "training", "iteration")


def command(method: str, seed: int, lr: float | None, iterations: int, run: str, args: argparse.Namespace) -> list[str]:
    return [
        "lit-vine", "fit",
        "--config", args.config,
        "--config", f"configs/methods/{METHODS[method]}.yaml",
        *OVERRIDES.get(method, []),
        f"--seed_everything={seed}", f"--model.init_args.seed={seed}", f"--data.init_args.seed={seed}",
        *([f"--model.init_args.learning_rate={lr}"] if lr is not None else []),
        f"--trainer.max_epochs={iterations}",
        f"--trainer.check_val_every_n_epoch={args.val_every}",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=null",  # no test report: validation curves are the measure
        f"--trainer.logger.init_args.save_dir={args.out / 'logs'}",
        f"--trainer.logger.init_args.name={METHODS[method]}",
        f"--trainer.logger.init_args.version={run}",
        f"--data.init_args.task.init_args.num_validation={args.num_validation}",
    ]


def run_one(cmd: list[str], log_dir: Path, jobs: int) -> None:
    """Runs one training command unless it already finished or crashed; a crash is recorded in
    ``<log_dir>/crashed`` (with the last line of its error) and does not stop the other runs."""
    if (log_dir / "done").exists() or (log_dir / "crashed").exists():
        return
    print(f"[study] {' '.join(cmd)}", flush=True)
    start = time.time()
    # Several runs share the machine: one thread each avoids oversubscribing the cores.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // jobs))}
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if result.returncode != 0:
        error = next((line for line in reversed(result.stderr.splitlines()) if line.strip()), f"exit status {result.returncode}")
        log_dir.mkdir(parents=True, exist_ok=True)
        (log_dir / "crashed").write_text(error + "\n")
        print(f"[study] {log_dir.parent.name}/{log_dir.name} crashed after {time.time() - start:.0f} s: {error}", flush=True)
        return
    (log_dir / "done").write_text(f"{time.time() - start:.1f}\n")
    print(f"[study] {log_dir.parent.name}/{log_dir.name} done in {time.time() - start:.0f} s", flush=True)


def run_many(runs: list[tuple[list[str], Path]], jobs: int) -> None:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(run_one, cmd, log_dir, jobs) for cmd, log_dir in runs]:
            future.result()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from a run's TensorBoard events."""
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def baseline(args: argparse.Namespace) -> dict[str, float]:
    """Validation metrics of the SFT checkpoint every run starts from (point 0 of each curve)."""
    path = args.out / "sft_baseline.json"
    if not path.exists():
        cmd = command(args.methods[0], args.seeds[0], None, 1, "sft", args)
        cmd = [c for c in cmd if not c.startswith(("--trainer.max_epochs", "--trainer.check_val"))]
        cmd[1] = "validate"
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        s = scalars(args.out / "logs" / METHODS[args.methods[0]] / "sft")
        path.write_text(json.dumps({tag: values[-1][2] for tag, values in s.items() if tag.startswith("val/")}))
    return json.loads(path.read_text())


def blame_means(s: dict[str, list[tuple[int, float, float]]]) -> dict[str, float]:
    """Blame accuracy and chance averaged over iterations, and accuracy pooled over every failed
    response of the run (late iterations have few failures; the pooled figure weighs each alike)."""
    if "blame/accuracy" not in s:
        return {}
    failed = {step: n for step, _, n in s["blame/failed_responses"]}
    pairs = [(v, failed[step]) for step, _, v in s["blame/accuracy"]]
    return {"accuracy": float(np.mean([v for v, _ in pairs])), "chance": float(np.mean([v for _, _, v in s["blame/chance"]])),
            "pooled": sum(v * n for v, n in pairs) / sum(n for _, n in pairs)}


def curve(log_dir: Path, start: dict[str, float]) -> dict:
    """Validation accuracy against policy optimizer steps and seconds (the SFT start at 0), the
    time split per iteration and the mean blame statistics of one run."""
    s = scalars(log_dir)
    t0 = min(w for tag in s.values() for _, w, _ in tag)
    updates = dict((step, v) for step, _, v in s.get("train/policy_updates", []))
    val = s.get(METRIC, [])
    return {
        "steps": [0] + [max((u for g, u in updates.items() if g <= step), default=0) for step, _, _ in val],
        "seconds": [0.0] + [w - t0 for _, w, _ in val],
        "acc": [start[METRIC]] + [v for _, _, v in val],
        "greedy": [start["val/greedy_acc"]] + [v for _, _, v in s.get("val/greedy_acc", [])],
        "time": {k: float(np.mean([v for _, _, v in s[f"time/{k}"]])) for k in PHASES if f"time/{k}" in s},
        "blame": blame_means(s),
        # sequences sampled only to estimate values (VinePPO, SPO-chain); SPO-tree's nodes are episodes too
        "mc_rollouts": mc_rollouts(log_dir, s),
        "tree_nodes": float(np.mean([v for _, _, v in s["spo/tree_nodes"]])) if "spo/tree_nodes" in s else None,
    }


def mc_rollouts(log_dir: Path, s: dict) -> float:
    """Mean MC continuations per iteration: logged as ``vine/mc_rollouts``, or (runs logged before
    that existed) ``vine/mc_requests`` x the run's K from its saved config."""
    if "vine/mc_rollouts" in s:
        return float(np.mean([v for _, _, v in s["vine/mc_rollouts"]]))
    if "vine/mc_requests" not in s:
        return 0.0
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    K = config["model"]["init_args"]["algorithm"]["init_args"]["num_mc_rollouts"]
    return K * float(np.mean([v for _, _, v in s["vine/mc_requests"]]))


def sweep(args: argparse.Namespace) -> dict[str, dict]:
    """Per method: the final validation pass@1 of each swept learning rate, and the chosen one."""
    runs = [(m, lr) for m in args.methods for lr in args.sweep_lrs]
    dirs = {(m, lr): args.out / "logs" / METHODS[m] / f"sweep_lr{lr:g}" for m, lr in runs}
    if not args.report_only:
        run_many([(command(m, args.seeds[0], lr, args.sweep_iterations, f"sweep_lr{lr:g}", args), dirs[m, lr]) for m, lr in runs], args.jobs)
    result = {}
    for m in args.methods:
        finals = {lr: scalars(dirs[m, lr]).get(METRIC, [(0, 0, float("nan"))])[-1][2] for lr in args.sweep_lrs if (dirs[m, lr] / "done").exists()}
        best = max(sorted(finals), key=lambda lr: (finals[lr], -lr)) if finals else None
        crashed = [lr for lr in args.sweep_lrs if (dirs[m, lr] / "crashed").exists()]  # never chosen
        result[m] = {"final_pass@1": finals, "chosen": best, "crashed": crashed}
    return result


def mean_curve(runs: list[dict], axis: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = min(len(r["acc"]) for r in runs)
    return np.mean([r[axis][:n] for r in runs], 0), np.mean([r["acc"][:n] for r in runs], 0), np.std([r["acc"][:n] for r in runs], 0)


def first_reach(x: np.ndarray, acc: np.ndarray, target: float) -> float | None:
    return next((float(xi) for xi, a in zip(x, acc) if a >= target - 1e-9), None)


def pct(mean: float, spread: float | None = None) -> str:
    return f"{100 * mean:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")


def report(args: argparse.Namespace, chosen: dict[str, dict]) -> None:
    start = baseline(args)
    data = {}
    for m in args.methods:
        runs = [args.out / "logs" / METHODS[m] / f"seed{s}" for s in args.seeds]
        data[m] = [curve(d, start) for d in runs if (d / "done").exists()]
    data = {m: runs for m, runs in data.items() if runs}
    if not data:
        sys.exit("no finished runs to report")
    targets = {f"{m}'s best": max(mean_curve(data[m], "steps")[1]) for m in ("PPO", "GRPO") if m in data}
    finals = {m: mean_curve(runs, "steps")[1][-1] for m, runs in data.items()}
    header = ["method", "lr", "seeds", "final pass@1 %", "best pass@1 %", "final greedy %"]
    header += [f"{axis} to {t} ({pct(v)} %)" for t, v in targets.items() for axis in ("steps", "seconds")]
    header += ["blame accuracy (mean of iterations)", "blame accuracy (pooled)", "chance", "MC rollouts / iter", "s/iter generation", "s/iter scoring", "s/iter value est.", "s/iter training"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for m, runs in data.items():
        cells = [m, f"{chosen[m]['chosen']:g}" if chosen.get(m, {}).get("chosen") else "config", str(len(runs)),
                 pct(np.mean([r["acc"][-1] for r in runs]), np.std([r["acc"][-1] for r in runs])),
                 pct(np.mean([max(r["acc"]) for r in runs]), np.std([max(r["acc"]) for r in runs])),
                 pct(np.mean([r["greedy"][-1] for r in runs]), np.std([r["greedy"][-1] for r in runs]))]
        for target in targets.values():
            for axis in ("steps", "seconds"):
                x, acc, _ = mean_curve(runs, axis)
                hit = first_reach(x, acc, target)
                cells.append("never" if hit is None else f"{hit:.0f}")
        blame = [r["blame"] for r in runs if r["blame"]]
        cells += [f"{np.mean([b[k] for b in blame]):.2f} ± {np.std([b[k] for b in blame]):.2f}" if blame else "–" for k in ("accuracy", "pooled")]
        cells.append(f"{np.mean([b['chance'] for b in blame]):.2f}" if blame else "–")
        nodes = [r["tree_nodes"] for r in runs if r.get("tree_nodes") is not None]
        cells.append(f"{np.mean([r.get('mc_rollouts', 0.0) for r in runs]):.0f}" + (f" ({np.mean(nodes):.0f} tree nodes, all episodes)" if nodes else ""))
        cells += [f"{np.mean([r['time'].get(k, 0.0) for r in runs]):.2f}" for k in ("generation", "scoring", "value_estimation", "training")]
        rows.append("| " + " | ".join(cells) + " |")

    verdict = ""
    if "VinePPO" in data and {"PPO", "GRPO"} <= set(data):
        goal_method = max(("PPO", "GRPO"), key=lambda m: finals[m])
        goal = finals[goal_method]
        x, acc, _ = mean_curve(data["VinePPO"], "steps")
        reached = first_reach(x, acc, goal)
        their_steps = mean_curve(data[goal_method], "steps")[0][-1]
        highest = all(finals["VinePPO"] >= f - 1e-9 for m, f in finals.items())
        verdict = (
            f"\n**The check.** The best of PPO's and GRPO's mean final pass@1 is {goal_method}'s, {pct(goal)} % after "
            f"{their_steps:.0f} policy steps. VinePPO's mean curve reaches it after "
            + ("never" if reached is None else f"{reached:.0f} steps ({reached / their_steps:.2f} of theirs)")
            + f"; VinePPO ends at {pct(finals['VinePPO'])} %, "
            + ("at least as high as every other method." if highest else "below " + ", ".join(f"{m} ({pct(f)} %)" for m, f in finals.items() if f > finals["VinePPO"]) + ".")
            + "\n"
        )
    for axis, label in [("steps", "policy optimizer steps"), ("seconds", "wall-clock seconds")]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, runs in data.items():
            x, y, err = mean_curve(runs, axis)
            ax.plot(x, 100 * y, marker="o", label=m)
            ax.fill_between(x, 100 * (y - err), 100 * (y + err), alpha=0.12)
        ax.set_xlabel(label)
        ax.set_ylabel(f"held-out {METRIC} (%)")
        ax.set_title(f"{args.title}: mean ± std over {len(args.seeds)} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(args.out / f"accuracy_vs_{axis}.png", dpi=110)
        plt.close(fig)

    sweep_rows = ""
    if args.sweep_lrs:
        sweep_rows = (
            f"\n**Learning-rate sweep** (seed {args.seeds[0]}, {args.sweep_iterations} iterations; final {METRIC} %; the chosen rate in bold):\n\n"
            "| method | " + " | ".join(f"lr {lr:g}" for lr in args.sweep_lrs) + " |\n|---|" + "---|" * len(args.sweep_lrs) + "\n"
            + "\n".join(
                f"| {m} | " + " | ".join(
                    (f"**{pct(v['final_pass@1'][lr])}**" if lr == v["chosen"] else pct(v["final_pass@1"][lr])) if lr in v["final_pass@1"]
                    else "crashed" if lr in v.get("crashed", []) else "–"
                    for lr in args.sweep_lrs) + " |"
                for m, v in chosen.items()
            ) + "\n"
        )
    crashes = sorted(args.out.glob("logs/*/*/crashed"))
    if crashes:
        sweep_rows += "\nCrashed runs (not used): " + "; ".join(f"{c.parent.parent.name}/{c.parent.name}: `{c.read_text().strip()}`" for c in crashes) + "\n"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    commands = "\n".join(" ".join(command(m, s, chosen.get(m, {}).get("chosen"), args.iterations, f"seed{s}", args)) for m in args.methods for s in args.seeds)
    text = (
        f"# {args.title}: method study\n\nProduced by `python benchmarks/study.py {shlex.join(a for a in sys.argv[1:] if a != '--report-only')}` on {machine}.\n"
        f"Every run: `{args.config}` plus the method's overlay, {args.iterations} iterations, {METRIC} on {args.num_validation} validation "
        f"problems every {args.val_every} iterations. The SFT checkpoint every run starts from: pass@1 "
        f"{pct(start[METRIC])} %, greedy {pct(start['val/greedy_acc'])} % (point 0 of every curve). Accuracies are means ± std "
        f"over seeds; steps and seconds to a target are where the mean curve first reaches it. Blame accuracy: the share of failed "
        f"responses whose most negative step advantage is their first wrong step (lit_vine/blame.py), averaged over the iterations of a run and pooled over all failed responses of a run, then over seeds.\n"
        + sweep_rows + "\n" + "\n".join(rows) + "\n" + verdict
        + "\n![accuracy vs steps](accuracy_vs_steps.png)\n![accuracy vs wall-clock](accuracy_vs_seconds.png)\n\n"
        + f"<details><summary>Exact commands</summary>\n\n```\n{commands}\n```\n</details>\n"
    )
    (args.out / "README.md").write_text(text)
    (args.out / "curves.json").write_text(json.dumps({"sweep": chosen, "runs": data}))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--title", default="Built-in arithmetic task")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--sweep-lrs", nargs="*", type=float, default=[])
    parser.add_argument("--sweep-iterations", type=int, default=15)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--num-validation", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "study")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out = args.out.resolve()
    chosen = sweep(args) if args.sweep_lrs else {}
    if not args.report_only:
        runs = [(m, s) for s in args.seeds for m in args.methods]
        run_many([(command(m, s, chosen.get(m, {}).get("chosen"), args.iterations, f"seed{s}", args), args.out / "logs" / METHODS[m] / f"seed{s}") for m, s in runs], args.jobs)
    report(args, chosen)


if __name__ == "__main__":
    main()

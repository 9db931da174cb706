"""Every method from the same SFT checkpoint, on the same data and evaluation, over several seeds.

    python benchmarks/study.py --iterations 30 --seeds 0 1 2            # runs, then report
    python benchmarks/study.py --report-only                             # report from existing logs

Each run is ``lit-vine fit --config configs/quickstart.yaml --config configs/methods/<m>.yaml``
with its seed; logs go to ``<out>/logs/<method>/seed<k>``. The report (``<out>/README.md``) has the
table, the plots (accuracy against optimizer steps and against wall-clock), the machine and the
exact commands.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
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
}
METRIC = "val/pass@1"


def command(method: str, seed: int, args: argparse.Namespace) -> list[str]:
    return [
        "lit-vine", "fit",
        "--config", "configs/quickstart.yaml",
        "--config", f"configs/methods/{METHODS[method]}.yaml",
        f"--seed_everything={seed}", f"--model.init_args.seed={seed}", f"--data.init_args.seed={seed}",
        f"--trainer.max_epochs={args.iterations}",
        f"--trainer.check_val_every_n_epoch={args.val_every}",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks=null",
        f"--trainer.logger.init_args.save_dir={args.out / 'logs'}",
        f"--trainer.logger.init_args.name={METHODS[method]}",
        f"--trainer.logger.init_args.version=seed{seed}",
        f"--data.init_args.task.init_args.num_validation={args.num_validation}",
    ]


def run_one(method: str, seed: int, args: argparse.Namespace) -> None:
    log_dir = args.out / "logs" / METHODS[method] / f"seed{seed}"
    if (log_dir / "done").exists():
        return
    cmd = command(method, seed, args)
    print(f"[study] {method} seed {seed}: {' '.join(cmd)}", flush=True)
    start = time.time()
    # Several runs share the machine: one thread each avoids oversubscribing the cores.
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.jobs))}
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL, env=env)
    (log_dir / "done").write_text(f"{time.time() - start:.1f}\n")
    print(f"[study] {method} seed {seed} done in {time.time() - start:.0f} s", flush=True)


def baseline(args: argparse.Namespace) -> dict[str, float]:
    """Validation metrics of the SFT checkpoint every run starts from (iteration 0 of each curve)."""
    path = args.out / "sft_baseline.json"
    if not path.exists():
        cmd = command(args.methods[0], args.seeds[0], args)
        cmd[1] = "validate"
        cmd = [c for c in cmd if not c.startswith(("--trainer.max_epochs", "--trainer.check_val"))]
        cmd = [c.replace(f"name={METHODS[args.methods[0]]}", "name=sft") for c in cmd]
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        s = scalars(args.out / "logs" / "sft" / f"seed{args.seeds[0]}")
        path.write_text(json.dumps({tag: values[-1][2] for tag, values in s.items() if tag.startswith("val/")}))
    return json.loads(path.read_text())


def run_all(args: argparse.Namespace) -> None:
    runs = [(method, seed) for seed in args.seeds for method in args.methods]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for future in [pool.submit(run_one, method, seed, args) for method, seed in runs]:
            future.result()


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, wall_time, value)] from a run's TensorBoard events."""
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def curves(args: argparse.Namespace, start: dict[str, float]) -> dict[str, list[dict]]:
    """Per method, per seed: validation accuracy against steps and seconds (the SFT start at 0),
    and the time split."""
    out: dict[str, list[dict]] = {}
    for method in args.methods:
        for seed in args.seeds:
            log_dir = args.out / "logs" / METHODS[method] / f"seed{seed}"
            if not (log_dir / "done").exists():
                continue
            s = scalars(log_dir)
            t0 = min(w for tag in s.values() for _, w, _ in tag)
            val = s.get(METRIC, [])
            out.setdefault(method, []).append(
                {
                    "steps": [0] + [step for step, _, _ in val],
                    "seconds": [0.0] + [w - t0 for _, w, _ in val],
                    "acc": [start[METRIC]] + [v for _, _, v in val],
                    "greedy": [start["val/greedy_acc"]] + [v for _, _, v in s.get("val/greedy_acc", [])],
                    "time": {k: float(np.mean([v for _, _, v in s.get(f"time/{k}", [(0, 0, 0.0)])])) for k in ("generation", "value_estimation", "training", "iteration")},
                }
            )
    return out


def first_reach(run: dict, target: float, axis: str) -> float | None:
    for x, acc in zip(run[axis], run["acc"]):
        if acc >= target:
            return x
    return None


def mean_std(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}" if values else "–"


def report(args: argparse.Namespace) -> None:
    start = baseline(args)
    data = curves(args, start)
    if not data:
        sys.exit("no finished runs to report")
    ppo_best = float(np.mean([max(r["acc"]) for r in data["PPO"]])) if "PPO" in data else None
    rows = [
        "| method | seeds | final pass@1 % | best pass@1 % | final greedy % | steps to PPO's best | seconds to PPO's best | s/iter generation | s/iter value est. | s/iter training |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in data.items():
        reach_steps = [first_reach(r, ppo_best, "steps") for r in runs] if ppo_best is not None else []
        reach_secs = [first_reach(r, ppo_best, "seconds") for r in runs] if ppo_best is not None else []

        def reach(values: list[float | None]) -> str:
            hit = [v for v in values if v is not None]
            return f"{np.median(hit):.0f} ({len(hit)}/{len(values)} seeds)" if hit else f"never (0/{len(values)})"

        t = {k: np.mean([r["time"][k] for r in runs]) for k in runs[0]["time"]}
        rows.append(
            f"| {method} | {len(runs)} | {mean_std([r['acc'][-1] for r in runs])} | {mean_std([max(r['acc']) for r in runs])} "
            f"| {mean_std([r['greedy'][-1] for r in runs if r['greedy']])} | {reach(reach_steps)} | {reach(reach_secs)} "
            f"| {t['generation']:.2f} | {t['value_estimation']:.2f} | {t['training']:.2f} |"
        )
    for axis, label in [("steps", "policy optimizer steps (mini-batches)"), ("seconds", "wall-clock seconds")]:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, runs in data.items():
            n = min(len(r["acc"]) for r in runs)
            x = np.mean([r[axis][:n] for r in runs], axis=0)
            y = 100 * np.mean([r["acc"][:n] for r in runs], axis=0)
            err = 100 * np.std([r["acc"][:n] for r in runs], axis=0)
            ax.plot(x, y, marker="o", label=method)
            ax.fill_between(x, y - err, y + err, alpha=0.12)
        ax.set_xlabel(label)
        ax.set_ylabel(f"held-out {METRIC} (%)")
        ax.set_title(f"Built-in arithmetic task, mean ± std over {len(args.seeds)} seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(args.out / f"accuracy_vs_{axis}.png", dpi=110)
        plt.close(fig)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    commands = "\n".join(" ".join(command(m, s, args)) for m in args.methods for s in args.seeds)
    text = (
        f"# Method study on the built-in task\n\nProduced by `python benchmarks/study.py {' '.join(a for a in sys.argv[1:] if a != '--report-only')}` on {machine}.\n"
        f"Held-out metric: {METRIC} on {args.num_validation} validation problems, every {args.val_every} iterations; "
        f"{args.iterations} iterations per run. The SFT checkpoint every run starts from: pass@1 "
        f"{100 * start[METRIC]:.1f}%, greedy {100 * start['val/greedy_acc']:.1f}% (iteration 0 of every curve). "
        f"PPO's best = {100 * ppo_best:.1f}% (mean over seeds of each seed's best, iteration 0 included).\n\n"
        + "\n".join(rows)
        + "\n\n![accuracy vs steps](accuracy_vs_steps.png)\n![accuracy vs wall-clock](accuracy_vs_seconds.png)\n\n"
        + f"<details><summary>Exact commands</summary>\n\n```\n{commands}\n```\n</details>\n"
    )
    (args.out / "README.md").write_text(text)
    (args.out / "curves.json").write_text(json.dumps(data))
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--val-every", type=int, default=5)
    parser.add_argument("--num-validation", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "study")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    args.out = args.out.resolve()
    if not args.report_only:
        run_all(args)
    report(args)


if __name__ == "__main__":
    main()

"""Where an RL iteration's time goes: ``torch.profiler`` over quickstart iterations of one method.

    python benchmarks/profile_iteration.py --algorithm GRPO
    python benchmarks/profile_iteration.py --algorithm VinePPO

Runs ``configs/quickstart.yaml`` with ``--model.algorithm <name>`` for ``--iterations`` iterations
(no validation or test), profiles all but the first, and writes
``benchmarks/profile/<algorithm>.md``: seconds per phase (the run's own ``time/*`` metrics),
each phase's share of the profiled time, and the operators that took the most time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from lightning import Callback
from torch.profiler import ProfilerActivity, profile, record_function

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lit_vine import HFEngine, RLModule  # noqa: E402
from lit_vine.algorithms import monte_carlo_values  # noqa: E402
from lit_vine.callbacks import TestReport  # noqa: E402
from lit_vine.cli import LitVineCLI  # noqa: E402
import lit_vine.algorithms.spo as spo  # noqa: E402
import lit_vine.algorithms.vine as vine  # noqa: E402
import lit_vine.rl as rl  # noqa: E402

# Functions whose time the report shows (inclusive: VinePPO's MC values call the engine too).
PHASES = {
    "HFEngine.generate (rollouts and MC continuations)": (HFEngine, "generate"),
    "RLModule.score_tokens (old/reference log-probs)": (RLModule, "score_tokens"),
    "RLModule.training_step (8 per iteration)": (RLModule, "training_step"),
}


def labelled(name: str, fn):
    def wrapper(*args, **kwargs):
        with record_function(f"phase: {name}"):
            return fn(*args, **kwargs)
    return wrapper


class Profiled(Callback):
    """Profiles every iteration after the first."""

    def __init__(self) -> None:
        self.profiler = None

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == 1:
            self.profiler = profile(activities=[ProfilerActivity.CPU])
            self.profiler.__enter__()

    def on_train_end(self, trainer, module) -> None:
        if self.profiler is not None:
            self.profiler.__exit__(None, None, None)


class Phases(Callback):
    def __init__(self) -> None:
        self.seconds: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, module) -> None:
        if trainer.current_epoch >= 1:
            self.seconds.append({k[5:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("time/")})


def counting_tokens(counts: dict[str, int], pack):
    """``pack`` that also counts real tokens, padded places and packed places of every forward."""
    def wrapper(input_ids, attention_mask, *args):
        packed = pack(input_ids, attention_mask, *args)
        counts["real"] += int(attention_mask.sum())
        counts["padded"] += attention_mask.numel()
        counts["packed"] += packed.input_ids.numel()
        return packed
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", default="GRPO")
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()

    for name, (owner, attr) in PHASES.items():
        setattr(owner, attr, labelled(name, getattr(owner, attr)))
    for family in (vine, spo):  # each calls it by its own name
        family.monte_carlo_values = labelled("monte_carlo_values (its engine calls included)", monte_carlo_values)
    tokens = {"real": 0, "padded": 0, "packed": 0}
    rl.pack = counting_tokens(tokens, rl.pack)

    cli = LitVineCLI(args=["--config", str(REPO / "configs" / "quickstart.yaml"), f"--model.algorithm={args.algorithm}", f"--trainer.max_epochs={args.iterations}",
                           "--trainer.logger=false", "--trainer.check_val_every_n_epoch=100000", "--trainer.enable_progress_bar=false",
                           "--trainer.enable_model_summary=false"], run=False, save_config_callback=None)
    profiled, phases = Profiled(), Phases()
    cli.trainer.callbacks = [profiled] + [cb for cb in cli.trainer.callbacks if not isinstance(cb, TestReport)] + [phases]
    cli.trainer.fit(cli.model, cli.datamodule)

    events = profiled.profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    phase_rows = [(e.key[7:], e.cpu_time_total / 1e6) for e in events if e.key.startswith("phase: ")]
    ops = sorted((e for e in events if not e.key.startswith("phase: ")), key=lambda e: -e.self_cpu_time_total)[:15]
    keys = sorted({k for s in phases.seconds for k in s})
    medians = {k: statistics.median(s.get(k, 0.0) for s in phases.seconds) for k in keys}
    out = REPO / "benchmarks" / "profile"
    out.mkdir(exist_ok=True)
    lines = [
        f"# Profile of a quickstart iteration: {args.algorithm}",
        "",
        f"`python benchmarks/profile_iteration.py --algorithm {args.algorithm} --iterations {args.iterations}`; "
        f"iterations 2-{args.iterations} profiled ({total:.1f} s of CPU time in operators), torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        f"Scoring and training forwards (all iterations): {tokens['real'] / tokens['padded']:.0%} of a padded batch's places are real "
        f"tokens, {tokens['real'] / tokens['packed']:.0%} of a packed one's ({tokens['packed'] / tokens['padded']:.0%} of the padded places).",
        "",
        "Median seconds per iteration (the run's `time/*` metrics):",
        "",
        "| phase | s |",
        "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in medians.items()],
        "",
        "CPU time inside each function, its callees included (all profiled iterations):",
        "",
        "| function | s | share |",
        "|---|---|---|",
        *[f"| {name} | {s:.2f} | {s / total:.0%} |" for name, s in sorted(phase_rows, key=lambda r: -r[1])],
        "",
        "Operators by self time:",
        "",
        "| operator | calls | self s | share |",
        "|---|---|---|---|",
        *[f"| `{e.key}` | {e.count} | {e.self_cpu_time_total / 1e6:.2f} | {e.self_cpu_time_total / 1e6 / total:.0%} |" for e in ops],
        "",
    ]
    path = out / f"{args.algorithm.lower()}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""How a run's test answers were written, before and after RL: with working or without it.

    python benchmarks/answer_styles.py logs/quickstart/version_0

Reads ``predictions/test_before.jsonl`` and ``test_after.jsonl`` (written by ``TestReport``) and
prints, for greedy answers and for samples, the fraction that give the answer with no working
(``#### 42`` and nothing else) and the accuracy of each kind. It separates the two ways a run on
``ArithmeticTask(shortcut_rate > 0)`` can gain: choosing to show the work, or computing better.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def styles(path: Path) -> dict[str, dict[str, float]]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    answers = {
        "greedy": [(r["greedy"], r["greedy_correct"]) for r in records],
        "samples": [pair for r in records for pair in zip(r["samples"], r["samples_correct"])],
    }
    out = {}
    for kind, pairs in answers.items():
        terse, worked = [], []
        for text, correct in pairs:
            (terse if text.lstrip().startswith("####") else worked).append(correct)
        out[kind] = {
            "answers": len(pairs),
            "without_working": len(terse) / len(pairs) if pairs else float("nan"),
            "accuracy_without_working": sum(terse) / len(terse) if terse else float("nan"),
            "accuracy_with_working": sum(worked) / len(worked) if worked else float("nan"),
        }
    return out


def percent(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"  # x != x: NaN, no answer of that kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir", type=Path, help="a run's version folder, e.g. logs/quickstart/version_0")
    args = parser.parse_args()
    print("| answers | when | without working | accuracy without working | accuracy with working |")
    print("|---|---|---|---|---|")
    for label in ("before", "after"):
        path = args.log_dir / "predictions" / f"test_{label}.jsonl"
        if not path.exists():
            raise SystemExit(f"answer_styles: {path} not found (does the run use the TestReport callback?)")
        for kind, s in styles(path).items():
            print(f"| {kind} | {label} | {percent(s['without_working'])} | {percent(s['accuracy_without_working'])} | {percent(s['accuracy_with_working'])} |")


if __name__ == "__main__":
    main()

"""MATH grading speed and time limits on the field's grading suites (tests/data/grading/) and on
MATH500's gold answers: cases per second, latency percentiles and timeouts at the default limit,
and what a tighter limit would cost.

    python benchmarks/grading.py            # writes benchmarks/grading/results.json and README.md

Each comparison is timed alone on one worker process with memoization off (the worker started
before timing), so a latency is one case's parse and comparison plus the pipe; the worker's
parse cache stays warm across cases, as in training. A case's latency is the median of
``--repeats`` passes. The suites are graded with each case's own settings; MATH500 compares every
gold answer with itself through math-verify (no string shortcut).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from grading_suites import load_cases  # noqa: E402

from lit_vine.grading import GraderTimeout, MathGrader, MathPolicy  # noqa: E402

OUT = REPO / "benchmarks" / "grading"
MATH500 = REPO.parent / "shared" / "data" / "math500" / "test.jsonl"
TIGHTER_LIMITS = (0.25, 0.5, 1.0, 2.0)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.machine())
    return f"{cpu}, {os.cpu_count()} cores visible ({platform.system()} {platform.release()}, Python {platform.python_version()})"


def workload() -> list[dict]:
    """Every MATH case of the suites, then MATH500's gold answers against themselves."""
    items = [
        {"name": f"{c.source}:{c.case}", "response": c.response, "gold": c.gold, "policy": c.options(), "label": c.label, "kind": "suite"}
        for c in load_cases()
        if c.grader == "math"
    ]
    if MATH500.is_file():
        for line in MATH500.read_text().splitlines():
            row = json.loads(line)
            items.append({"name": f"math500:{row['unique_id']}", "gold": row["answer"], "predicted": row["answer"], "label": 1, "kind": "math500"})
    return items


def timed_one_by_one(items: list[dict], time_limit: float) -> list[dict]:
    """Each item graded alone (one worker, no memo): its verdict and seconds, and whether it timed out."""
    grader = MathGrader(time_limit=time_limit, workers=1, memoize=False)
    grader.grade_many([("$\\boxed{\\frac{1}{2}}$", "0.5")])  # start the worker before timing
    results = []
    for item in items:
        before = grader.timeouts
        start = time.perf_counter()
        if item["kind"] == "math500":
            try:
                verdict = float(grader.equivalent(item["gold"], item["predicted"]))
            except GraderTimeout:
                verdict = 0.0
        else:
            verdict = grader.grade_many([(item["response"], item["gold"])], policy=item["policy"])[0]
        results.append({"name": item["name"], "seconds": time.perf_counter() - start, "verdict": verdict, "label": item["label"], "timed_out": grader.timeouts > before})
    grader.close()
    return results


def summary(results: list[dict]) -> dict:
    seconds = sorted(r["seconds"] for r in results)
    quantile = lambda q: seconds[min(len(seconds) - 1, int(q * len(seconds)))]  # noqa: E731
    return {
        "cases": len(results),
        "cases_per_second": len(results) / sum(seconds),
        "p50_ms": 1000 * quantile(0.50),
        "p95_ms": 1000 * quantile(0.95),
        "p99_ms": 1000 * quantile(0.99),
        "max_ms": 1000 * seconds[-1],
        "timeouts": sum(r["timed_out"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", type=float, default=MathGrader().time_limit, help="the limit of the timed passes (default: the grader's)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; a case's latency is their median")
    args = parser.parse_args()
    items = workload()
    load_before = os.getloadavg()[0]
    passes = [timed_one_by_one(items, args.time_limit) for _ in range(args.repeats)]
    results = [dict(runs[0], seconds=statistics.median(r["seconds"] for r in runs), timed_out=any(r["timed_out"] for r in runs)) for runs in zip(*passes)]
    assert all(len({r["verdict"] for r in runs}) == 1 for runs in zip(*passes)), "a verdict changed between passes"
    by_kind = {kind: summary([r for r, i in zip(results, items) if i["kind"] == kind]) for kind in ("suite", "math500")}
    paid_right = [r for r in results if r["verdict"] == 1.0 and r["label"] == 1]
    slowest = sorted(results, key=lambda r: -r["seconds"])[:8]
    # What a tighter limit would cost: right answers (paid at the default) slower than it.
    tighter = {str(limit): sorted(r["name"] for r in paid_right if r["seconds"] > limit) for limit in TIGHTER_LIMITS}

    report = {
        "machine": machine(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": "python benchmarks/grading.py",
        "repeats": args.repeats,
        "time_limit_s": args.time_limit,
        "default_policy": MathPolicy().__dict__,
        "one_worker": by_kind,
        "slowest": [{k: r[k] for k in ("name", "seconds", "verdict", "label", "timed_out")} for r in slowest],
        "slowest_right_answer_s": max(r["seconds"] for r in paid_right),
        "right_answers_lost_at_tighter_limits": tighter,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    write_readme(report)
    print(json.dumps({k: report[k] for k in ("one_worker", "slowest_right_answer_s", "right_answers_lost_at_tighter_limits")}, indent=2))


def write_readme(report: dict) -> None:
    rows = [
        f"| {kind} | {s['cases']} | {s['cases_per_second']:.1f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['p99_ms']:.0f} | {s['max_ms']:.0f} | {s['timeouts']} |"
        for kind, s in report["one_worker"].items()
    ]
    slow = [f"| `{r['name']}` | {1000 * r['seconds']:.0f} | {r['verdict']:.0f} | {r['label']} | {'yes' if r['timed_out'] else ''} |" for r in report["slowest"]]
    lost = [f"| {limit} s | {len(names)} | {', '.join(f'`{n}`' for n in names) or '-'} |" for limit, names in report["right_answers_lost_at_tighter_limits"].items()]
    text = "\n".join(
        [
            "# MATH grading speed and time limits",
            "",
            f"Machine: {report['machine']}; 1-minute load average {report['load_average_1min'][0]} before, "
            f"{report['load_average_1min'][1]} after (a shared machine: other jobs ran). "
            f"Command: `{report['command']}` (writes this file and `results.json`).",
            "",
            f"One worker process, memoization off, each case timed alone, limit {report['time_limit_s']:g} s (the default); "
            f"a case's latency is the median of {report['repeats']} passes:",
            "",
            "| cases | n | cases/s | p50 ms | p95 ms | p99 ms | max ms | timeouts |",
            "|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"`suite`: every MATH-style case of `tests/data/grading/` with its own settings; `math500`: each gold answer against itself "
            f"through math-verify. The slowest right answer paid took {1000 * report['slowest_right_answer_s']:.0f} ms.",
            "",
            "Slowest cases:",
            "",
            "| case | ms | verdict | label | timed out |",
            "|---|---|---|---|---|",
            *slow,
            "",
            "Right answers (label 1, paid at the default limit) that a tighter limit would lose:",
            "",
            "| limit | lost | cases |",
            "|---|---|---|",
            *lost,
            "",
        ]
    )
    (OUT / "README.md").write_text(text)


if __name__ == "__main__":
    main()

"""How often lit-vine's step splitters cut where the VinePPO authors' code cuts.

    python benchmarks/math_steps.py                                   # against the shipped cut points
    python benchmarks/math_steps.py --reference-src ~/VinePPO/src     # recompute them from a checkout

The reference (McGill-NLP/VinePPO @ efe7228, the code behind the paper's tables) splits MATH
solutions with ``treetune/tasks/math_extract_steps_inplace.py`` and GSM8K ones with
``GSM8K.split_solution_into_intermediate_steps`` (``treetune/tasks/gsm8k.py``). Their cut points on
MATH500's and GSM8K test's gold solutions are shipped in ``benchmarks/math_steps/`` (made with
``--reference-src``), so this runs without the reference installed. Agreement is reported exactly
and with whitespace ignored (a cut counted by the non-space characters before it); results are
written to ``benchmarks/math_steps/results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from lit_vine.steps import split_lines, split_math  # noqa: E402

OUT = HERE / "math_steps"
DATA = HERE.parent.parent / "shared" / "data"
SETS = {  # name: (data file, text field, id field, lit-vine splitter)
    "math500": ("math500/test.jsonl", "solution", "unique_id", split_math),
    "gsm8k_test": ("gsm8k/test.jsonl", "answer", None, split_lines),
}


def load(data: Path, name: str) -> list[tuple[str, str]]:
    """(id, solution) pairs; GSM8K solutions without calculator annotations, as the reference trains on."""
    path, text_field, id_field, _ = SETS[name]
    rows = [json.loads(line) for line in (data / path).read_text().splitlines() if line.strip()]
    texts = [re.sub(r"<<.*?>>", "", r[text_field]) if name.startswith("gsm8k") else r[text_field] for r in rows]
    return [(r[id_field] if id_field else f"{name}-{i}", t) for i, (r, t) in enumerate(zip(rows, texts))]


def reference_splitters(src: Path) -> dict:
    """The reference's two splitters, loaded from its source files with stand-ins for the few
    ``treetune`` imports they need (so its heavy package __init__ does not run)."""

    def module(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        return mod

    class Task:
        register = classmethod(lambda cls, *a, **k: (lambda c: c))

        def __init__(self, **kwargs) -> None:
            pass

    sys.modules["treetune"] = types.SimpleNamespace(logging_utils=types.SimpleNamespace(get_logger=lambda name: None))
    sys.modules["treetune.logging_utils"] = sys.modules["treetune"].logging_utils
    sys.modules["treetune.tasks"] = types.SimpleNamespace(Task=Task)
    sys.modules["treetune.tasks.math_extract_steps"] = types.SimpleNamespace(md5_hash=lambda t: hashlib.md5(t.encode()).hexdigest())
    inplace = module("ref_math_steps", src / "treetune/tasks/math_extract_steps_inplace.py")
    gsm8k = module("ref_gsm8k", src / "treetune/tasks/gsm8k.py").GSM8K(use_original_format=True)
    return {"math500": inplace.split_solution_inplace, "gsm8k_test": gsm8k.split_solution_into_intermediate_steps}


def cuts_of(pieces: list[str]) -> list[int]:
    out = [0]
    for piece in pieces:
        out.append(out[-1] + len(piece))
    return out


def ignoring_whitespace(text: str, cuts: list[int]) -> list[int]:
    return sorted({len("".join(text[:c].split())) for c in cuts[1:-1]})


def compare(name: str, solutions: list[tuple[str, str]], reference: dict[str, list[int] | None]) -> dict:
    split = SETS[name][3]
    exact = same = failed = 0
    ours, theirs, disagreements = [], [], []
    for uid, text in solutions:
        want = reference[uid]
        mine = cuts_of(split(text))
        ours.append(len(mine) - 1)
        if want is None:  # the reference raised on this text
            failed += 1
            continue
        theirs.append(len(want) - 1)
        exact += mine == want
        if ignoring_whitespace(text, mine) == ignoring_whitespace(text, want):
            same += 1
        else:
            disagreements.append(uid)
    n = len(solutions) - failed
    return {
        "solutions": len(solutions),
        "reference_failed": failed,
        "same_cuts": exact / n,
        "same_cuts_ignoring_whitespace": same / n,
        "steps_per_solution": {"lit_vine": sum(ours) / len(ours), "reference": sum(theirs) / max(1, len(theirs))},
        "max_steps": {"lit_vine": max(ours), "reference": max(theirs, default=0)},
        "disagreements": disagreements[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder with math500/ and gsm8k/ (default ../shared/data)")
    parser.add_argument("--reference-src", type=Path, help="the src/ folder of a VinePPO checkout: recompute its cut points")
    args = parser.parse_args()
    results = {}
    for name in SETS:
        solutions = load(args.data, name)
        cuts_file = OUT / f"reference_cuts_{name}.jsonl"
        if args.reference_src:
            splitter = reference_splitters(args.reference_src)[name]
            with cuts_file.open("w") as f:
                for uid, text in solutions:
                    try:
                        cuts = splitter(text)
                    except Exception:  # noqa: BLE001 - the reference drops such responses
                        cuts = None
                    f.write(json.dumps({"id": uid, "cuts": cuts}) + "\n")
        reference = {r["id"]: r["cuts"] for r in map(json.loads, cuts_file.read_text().splitlines())}
        results[name] = compare(name, solutions, reference)
        r = results[name]
        print(
            f"{name}: {len(solutions)} gold solutions; same cuts as the reference {100 * r['same_cuts']:.1f} % "
            f"({100 * r['same_cuts_ignoring_whitespace']:.1f} % ignoring whitespace); steps per solution "
            f"{r['steps_per_solution']['lit_vine']:.2f} vs {r['steps_per_solution']['reference']:.2f} "
            f"(max {r['max_steps']['lit_vine']} vs {r['max_steps']['reference']})"
        )
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

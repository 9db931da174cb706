"""The field's grading suites in ``tests/data/grading/``: loading the cases and grading them.

Each ``<source>.jsonl`` holds one source's cases (``sources.json`` names its origin) as rows
``{"case", "gold", "response", "label"}`` plus, where they apply, ``settings`` (options the source
ran the case with: part of the case), ``policy`` (a name in ``policies.json``: lit-vine disagrees
with the label on purpose) and ``note``. Used by ``tests/test_grading_suites.py`` and
``benchmarks/grading.py``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lit_vine.grading import GSM8KPolicy, MathGrader, MathPolicy, extract_gsm8k_answer, grade_gsm8k

DATA = Path(__file__).resolve().parent / "data" / "grading"
SOURCES: dict[str, dict] = json.loads((DATA / "sources.json").read_text())
POLICIES: dict[str, dict] = json.loads((DATA / "policies.json").read_text())


@dataclass(frozen=True)
class Case:
    """One labelled pair of a source, as lit-vine grades it."""

    source: str
    grader: str  # "math" or "gsm8k"
    case: str
    gold: str | None  # None: a GSM8K line from which no number may be read
    response: str
    label: int
    settings: dict = field(default_factory=dict)
    policy: str | None = None
    note: str = ""

    def options(self, with_policy: bool = False) -> MathPolicy | GSM8KPolicy:
        """The grader options of this case: the defaults with the source's settings, and the
        declared policy's options when ``with_policy``."""
        chosen = dict(self.settings)
        if with_policy:
            chosen.update(POLICIES[self.policy]["options"])
        return (MathPolicy if self.grader == "math" else GSM8KPolicy)(**chosen)

    @property
    def offered(self) -> bool:
        """Whether the declared policy difference is a grader option (else it is only listed)."""
        return self.policy is not None and POLICIES[self.policy]["options"] is not None


def load_cases() -> list[Case]:
    """Every case of every source file, in file order."""
    cases = []
    for source, origin in SOURCES.items():
        for line in (DATA / f"{source}.jsonl").read_text().splitlines():
            row = json.loads(line)
            row.pop("pred", None)  # the source's own prediction text, kept in the file for reference
            cases.append(Case(source=source, grader=origin["grader"], **row))
    return cases


def grade(grader: MathGrader, cases: list[Case], with_policy: bool = False) -> list[float]:
    """lit-vine's verdicts on ``cases`` (MATH ones batched through ``grader``'s workers)."""
    verdicts: dict[int, float] = {}
    by_options: dict[MathPolicy, list[int]] = {}
    for i, case in enumerate(cases):
        options = case.options(with_policy)
        if case.grader == "gsm8k":
            read = extract_gsm8k_answer(case.response, options)
            verdicts[i] = grade_gsm8k(case.response, case.gold, options) if case.gold is not None else float(read is not None)
        else:
            by_options.setdefault(options, []).append(i)
    for options, indices in by_options.items():
        for i, verdict in zip(indices, grader.grade_many([(cases[i].response, cases[i].gold) for i in indices], policy=options)):
            verdicts[i] = verdict
    return [verdicts[i] for i in range(len(cases))]


def option_names() -> dict[str, set[str]]:
    """The option names of each grader, for checking the manifests."""
    return {"math": {f.name for f in dataclasses.fields(MathPolicy)}, "gsm8k": {f.name for f in dataclasses.fields(GSM8KPolicy)}}

"""lit-vine's graders against the field's own test suites (``tests/data/grading/``), labels as the
sources give them: agreement on every case without a declared policy difference, no wrong answer
paid among them, and every declared difference real and, where it is an option, undone by it."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest
from grading_suites import DATA, POLICIES, SOURCES, Case, grade, load_cases, option_names

from lit_vine.grading import MathGrader

CASES = load_cases()


@pytest.fixture(scope="module")
def grader():
    g = MathGrader(time_limit=5.0, workers=2)
    yield g
    g.close()


@pytest.fixture(scope="module")
def verdicts(grader) -> list[float]:
    """lit-vine's verdict on every case at the defaults (with the source's own settings)."""
    return grade(grader, CASES)


def test_every_source_file_names_its_origin():
    assert {p.stem for p in DATA.glob("*.jsonl")} == set(SOURCES)
    for name, origin in SOURCES.items():
        assert origin["grader"] in ("math", "gsm8k"), name
        assert origin["repo"].count("/") == 1 and len(origin["commit"]) == 40 and origin["paths"], name
        assert origin["license"] and origin["conversion"], name


def test_cases_are_well_formed():
    names = option_names()
    assert len(CASES) > 400
    for case in CASES:
        assert case.label in (0, 1) and case.case and case.response, case
        assert case.gold is not None or (case.grader == "gsm8k" and case.label == 0), case
        assert set(case.settings) <= names[case.grader], case
        if case.policy is not None:
            assert case.policy in POLICIES, case
            assert case.policy != "source_label_wrong" or case.note, case
    for name, policy in POLICIES.items():
        assert policy["reason"], name
        options = policy["options"]
        assert options is None or set(options) <= names["math"] | names["gsm8k"], name
    assert {c.policy for c in CASES if c.policy} == set(POLICIES)  # no policy declared for nothing


def test_agreement_without_declared_difference(verdicts):
    """>= 97 % agreement with the sources' labels where no policy difference is declared, and no
    wrong answer paid there."""
    per_source: dict[str, list[bool]] = defaultdict(list)
    paid_wrong, refused_right = [], []
    for case, verdict in zip(CASES, verdicts):
        if case.policy is None:
            per_source[case.source].append(verdict == case.label)
            (paid_wrong if verdict > case.label else refused_right if verdict < case.label else []).append(case.case)
    for source, agree in per_source.items():
        print(f"{source}: {sum(agree)}/{len(agree)} agree ({100 * sum(agree) / len(agree):.1f} %)")
    total = [a for agree in per_source.values() for a in agree]
    print(f"all: {sum(total)}/{len(total)} ({100 * sum(total) / len(total):.1f} %); refused although right: {refused_right}")
    assert paid_wrong == []
    assert sum(total) / len(total) >= 0.97


@pytest.mark.parametrize("case", [c for c in CASES if c.policy], ids=lambda c: f"{c.source}:{c.case}")
def test_declared_difference_is_real_and_its_option_undoes_it(case: Case, grader):
    """The default verdict differs from the source's label (else the declaration is stale); where
    the policy is an option, that option gives the source's label."""
    assert grade(grader, [case])[0] != case.label
    if case.offered:
        assert grade(grader, [case], with_policy=True)[0] == case.label


def test_each_offered_policy_changes_a_verdict_both_ways_tested():
    """Every option named in policies.json is exercised by at least one case of the suites."""
    offered = {name for name, policy in POLICIES.items() if policy["options"]}
    assert offered == {c.policy for c in CASES if c.offered}


def test_settings_are_part_of_the_case(grader):
    """A source setting (precision) decides its case: without it the verdict changes."""
    with_settings = [c for c in CASES if c.settings and c.policy is None]
    assert with_settings
    plain = [dataclasses.replace(c, settings={}) for c in with_settings]
    assert grade(grader, with_settings) != grade(grader, plain)

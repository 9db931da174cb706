"""The built-in task: deterministic, disjoint splits; gold solutions grade correct; slips are real."""

import re

from lit_vine.grading import grade_gsm8k
from lit_vine.steps import split_lines
from lit_vine.tasks.arithmetic import ArithmeticTask


def small(**kw):
    return ArithmeticTask(num_train=500, num_validation=50, num_test=50, **kw)


def test_splits_are_deterministic_and_disjoint():
    a, b = small(seed=3), small(seed=3)
    for split in ("train", "validation", "test"):
        assert [p.question for p in a.problems(split)] == [p.question for p in b.problems(split)]
    qs = {split: {p.question for p in a.problems(split)} for split in ("train", "validation", "test")}
    assert not (qs["train"] & qs["test"]) and not (qs["train"] & qs["validation"]) and not (qs["validation"] & qs["test"])
    assert [p.question for p in small(seed=4).problems("test")] != [p.question for p in a.problems("test")]


def test_gold_solutions_are_correct_and_one_step_per_operation():
    task = small(min_ops=2, max_ops=5)
    for p in task.problems("train"):
        steps = split_lines(p.solution)
        ops = p.question.count(" ") - 5  # "Compute <start> <op> ... <op> from left to right."
        assert len(steps) == ops
        assert grade_gsm8k(p.solution, p.answer) == 1.0
        # every line is true arithmetic
        for line in p.solution.splitlines()[:-1]:
            lhs, rhs = line.split("=")
            assert eval(lhs) == int(rhs)  # noqa: S307 (digits and one operator)


def test_difficulty_knobs_bound_the_values():
    task = small(min_ops=4, max_ops=4, max_value=50, max_operand=5)
    for p in task.problems("test"):
        values = [int(line.split("=")[1]) for line in p.solution.splitlines()[:-1]]
        assert len(values) == 4 and all(0 <= v <= 50 for v in values)


def test_slips_break_a_fraction_of_training_solutions_only():
    clean, slipped = small(), small(slip_rate=0.4)
    # same questions and answers, only the training solutions change
    for split in ("train", "validation", "test"):
        assert [(p.question, p.answer) for p in clean.problems(split)] == [(p.question, p.answer) for p in slipped.problems(split)]
    wrong = [p for p in slipped.problems("train") if grade_gsm8k(p.solution, p.answer) == 0]
    assert 0.3 < len(wrong) / 500 < 0.5
    assert all(grade_gsm8k(p.solution, p.answer) == 1 for p in slipped.problems("test"))
    # a slip is one wrong line; the lines after it compute correctly from the wrong value
    for p in wrong[:50]:
        bad = [line for line in p.solution.splitlines()[:-1] if eval(line.split("=")[0]) != int(line.split("=")[1])]  # noqa: S307
        assert len(bad) == 1


def test_shortcuts_drop_the_working_of_a_fraction_of_training_solutions_only():
    clean, terse = small(), small(shortcut_rate=0.5)
    for split in ("train", "validation", "test"):
        assert [(p.question, p.answer) for p in clean.problems(split)] == [(p.question, p.answer) for p in terse.problems(split)]
    pairs = list(zip(clean.problems("train"), terse.problems("train")))
    short = [t for c, t in pairs if t.solution != c.solution]
    assert 0.4 < len(short) / len(pairs) < 0.6
    # a shortcut keeps the true answer and nothing else
    assert all(t.solution == f"#### {t.answer}" and grade_gsm8k(t.solution, t.answer) == 1 for t in short)
    assert [p.solution for p in terse.problems("test")] == [p.solution for p in clean.problems("test")]
    # slips and shortcuts are drawn independently: turning one on never moves the other
    both = small(slip_rate=0.4, shortcut_rate=0.5)
    assert [p.solution.startswith("####") for p in both.problems("train")] == [p.solution.startswith("####") for p in terse.problems("train")]


def test_quick_steps_are_the_intended_mix_and_wrong_exactly_on_a_carry():
    from lit_vine.tasks.arithmetic import Chain, apply

    rate = 0.4
    task = ArithmeticTask(num_train=2000, num_validation=100, num_test=100, operations="+-", min_ops=5, max_ops=8, quick_rate=rate)
    quick = steps = wrong_quick = carries = 0
    for p in task.problems("train"):
        lines = p.solution.splitlines()[:-1]
        steps += len(lines)
        for line in lines:
            if "~" not in line:
                continue
            quick += 1
            a, op, b, written = re.fullmatch(r"(\d+)([+-])(\d+)~(\d+)", line).groups()
            a, b, written = int(a), int(b), int(written)
            width = max(len(str(a)), len(str(b)))
            pairs = [(int(x), int(y)) for x, y in zip(str(a).zfill(width), str(b).zfill(width))]
            carry = any(x + y >= 10 for x, y in pairs) if op == "+" else any(x < y for x, y in pairs)  # at any digit
            carries += carry
            wrong_quick += written != apply(op, a, b)
            assert (written != apply(op, a, b)) == carry, line  # wrong exactly when there is a carry or borrow
    # every step is quick with probability `rate` (binomial: 4 standard deviations)
    assert abs(quick / steps - rate) < 4 * (rate * (1 - rate) / steps) ** 0.5
    assert wrong_quick == carries > 0.25 * quick  # a good share of quick steps go wrong
    assert all("~" not in p.solution for split in ("validation", "test") for p in task.problems(split))
    assert all(5 <= len(Chain.parse(p.question).ops) <= 8 and set(p.question) & set("*") == set() for p in task.problems("train"))


def wrong_quick_lines(solution: str) -> int:
    from lit_vine.tasks.arithmetic import _STEP, apply

    found = [_STEP.fullmatch(line) for line in solution.splitlines() if "~" in line]
    return sum(int(m[4]) != apply(m[2], int(m[1]), int(m[3])) for m in found if m)


def test_in_the_credit_regime_a_dropped_carry_is_never_undone():
    """configs/credit.yaml's chains: a solution with a wrong quick step always ends wrong, so the first
    wrong step is the one that doomed it (what blame accuracy scores). With "+-" chains a dropped
    borrow can cancel a dropped carry: the reason the regime uses additions."""
    import yaml
    from conftest import REPO

    regime = yaml.safe_load((REPO / "configs" / "credit.yaml").read_text())["data"]["init_args"]["task"]["init_args"]
    assert regime["operations"] == "+" and regime["quick_rate"] > 0
    every_step_quick = {**regime, "num_train": 3000, "quick_rate": 1.0}
    doomed = [p for p in ArithmeticTask(**every_step_quick).problems("train") if wrong_quick_lines(p.solution)]
    assert len(doomed) > 1000
    assert all(grade_gsm8k(p.solution, p.answer) == 0 for p in doomed)
    mixed = ArithmeticTask(**{**every_step_quick, "operations": "+-"}).problems("train")
    cancelled = [p for p in mixed if wrong_quick_lines(p.solution) and grade_gsm8k(p.solution, p.answer) == 1]
    assert len(cancelled) > 100


def test_checked_steps_add_back_exactly_the_carries_the_quick_form_drops():
    from lit_vine.tasks.arithmetic import Chain, apply, parse_step, step_line, without_carry

    task = ArithmeticTask(num_train=1000, num_validation=50, num_test=50, operations="+", min_ops=5, max_ops=8, quick_rate=0.5, show_carries=True)
    checked = 0
    for p in task.problems("train"):
        chain = Chain.parse(p.question)
        for i, line in enumerate(p.solution.splitlines()[:-1]):
            if "~" in line:
                continue
            checked += 1
            a, op, b, result = parse_step(line)  # from the written value, which a quick step before may have broken
            assert (op, b) == chain.ops[i] and result == apply(op, a, b)  # checked lines are always right
            assert line.startswith(step_line(op, a, b, "quick")[0].replace("~", "="))  # ... and start as the quick line
            assert len(line) - len(step_line(op, a, b, "quick")[0]) in (4, 5, 6)  # the check costs 4-6 characters
    assert checked > 2000
    assert parse_step("47+18=55+10=65") == (47, "+", 18, 65) and without_carry("+", 47, 18) == 55
    assert parse_step("47+18=55+0=65") is None and parse_step("47+18=65+0=65") is None  # a check that does not add up


def test_in_the_budget_regime_the_right_form_depends_on_the_step():
    """configs/credit_budget.yaml's premise, counted on its validation problems: checking every step
    overruns the length budget, skipping every check is wrong wherever a step carries, and the rule
    (quick exactly on the carry-free steps) is right and fits, so no single form is right everywhere."""
    import yaml
    from conftest import REPO

    from lit_vine.tasks.arithmetic import Chain

    regime = yaml.safe_load((REPO / "configs" / "credit_budget.yaml").read_text())["data"]["init_args"]["task"]["init_args"]
    assert regime["operations"] == "+" and regime["show_carries"] and regime["length_slack"] is not None
    task = ArithmeticTask(**regime)
    problems = task.problems("validation")
    chains = [Chain.parse(p.question) for p in problems]
    every_step_checked = [task.reward(c.solution(show_carries=True), p) for c, p in zip(chains, problems)]
    no_step_checked = [task.reward(c.solution(quick=frozenset(range(len(c.ops))), show_carries=True), p) for c, p in zip(chains, problems)]
    rule = [task.reward(c.shortest_solution(show_carries=True), p) for c, p in zip(chains, problems)]
    assert sum(every_step_checked) < 0.1 * len(problems)
    assert sum(no_step_checked) < 0.2 * len(problems)
    assert sum(rule) == len(problems)
    # the culprit of an over-budget response is the step after which nothing correct fits: checking
    # every step before it (and no carry-free step after) fits, checking it too does not
    for c, p in zip(chains, problems):
        wrong = task.first_wrong_step(c.solution(show_carries=True), p)
        if wrong is not None:
            assert task.reward(c.solution(quick=frozenset(i for i in c.carry_free() if i >= wrong), show_carries=True), p)
            assert not task.reward(c.solution(quick=frozenset(i for i in c.carry_free() if i > wrong), show_carries=True), p)


def test_the_budget_regime_warm_start_picks_the_form_at_random():
    """The shipped checkpoints/sft-credit-budget is the regime's warm start: on carry-free and on
    carrying steps alike it writes the quick form about half the time and the checked form otherwise,
    so a response holds good and bad choices together and few of its answers fit the budget."""
    import torch
    import yaml
    from conftest import REPO
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lit_vine import HFEngine, SamplingParams
    from lit_vine.tasks.arithmetic import Chain, parse_step

    config = yaml.safe_load((REPO / "configs" / "credit_budget.yaml").read_text())
    rl = config["model"]["init_args"]
    task = ArithmeticTask(**{**config["data"]["init_args"]["task"]["init_args"], "num_train": 1})
    policy = REPO / rl["policy"]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32), AutoTokenizer.from_pretrained(policy)
    engine = HFEngine()
    engine.setup(model, tokenizer)
    problems = task.problems("validation")[:24]
    sampled = engine.generate([task.prompt_ids(p, tokenizer) for p in problems], SamplingParams(rl["temperature"], rl["top_p"], rl["max_new_tokens"], n=4), seed=0)
    forms = {"carry-free": [], "carrying": []}  # the form of each step that starts from the right value
    right = 0
    for problem, group in zip(problems, sampled):
        chain = Chain.parse(problem.question)
        values, free = chain.values(), chain.carry_free()
        for ids in group:
            text = tokenizer.decode(ids, skip_special_tokens=True)
            right += task.reward(text, problem) > 0
            for i, line in enumerate(text.split("\n")[: len(chain.ops)]):
                step = parse_step(line.strip())
                if step is not None and step[:3] == (values[i], *chain.ops[i]):
                    form = "quick" if "~" in line else "checked" if line.count("=") == 2 else "worked"
                    forms["carry-free" if i in free else "carrying"].append(form)
    for kind, written in forms.items():
        assert len(written) > 50, kind
        assert 0.3 < written.count("quick") / len(written) < 0.7, (kind, written.count("quick") / len(written))
        assert written.count("worked") == 0, kind  # the checked form, never the no-cost regime's plain one
    assert right < 0.1 * len(problems) * 4

"""DatasetTask: loading every file kind, column mapping, clear errors, prompts and prompt limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets
import pytest

from lit_vine.tasks import DatasetTask, PromptFormat
from lit_vine.tasks.loading import DataError

HERE = Path(__file__).resolve().parent
GSM8K_SAMPLE = HERE / "data" / "gsm8k_sample.jsonl"
MATH_SAMPLE = HERE / "data" / "math_sample.jsonl"
ROWS = [
    {"q": "What is 2+3?", "sol": "2+3=5\n#### 5", "uid": "a"},
    {"q": "What is 4*5?", "sol": "4*5=20\n#### 20", "uid": "b"},
    {"q": "What is 9-1?", "sol": "9-1=8\n#### 8", "uid": "c"},
]
MAPPING = dict(question_field="q", solution_field="sol", answer_field=None, id_field="uid", train=None)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def check_problems(task: DatasetTask) -> None:
    problems = task.problems("test")
    assert [p.id for p in problems] == ["a", "b", "c"]
    assert [p.answer for p in problems] == ["5", "20", "8"]  # read from "#### n"
    assert problems[1].question == "What is 4*5?" and problems[1].solution == "4*5=20\n#### 20"


def test_jsonl_json_parquet_and_saved_folder(tmp_path):
    check_problems(DatasetTask(test=str(write_jsonl(tmp_path / "t.jsonl", ROWS)), **MAPPING))
    (tmp_path / "t.json").write_text(json.dumps(ROWS))
    check_problems(DatasetTask(test=str(tmp_path / "t.json"), **MAPPING))
    datasets.Dataset.from_list(ROWS).to_parquet(str(tmp_path / "t.parquet"))
    check_problems(DatasetTask(test=str(tmp_path / "t.parquet"), **MAPPING))
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "saved"))
    check_problems(DatasetTask(source=str(tmp_path / "saved"), **MAPPING))
    check_problems(DatasetTask(test=f"{tmp_path / 'saved'}@test", **MAPPING))
    # A folder of <split>.jsonl files, like ../shared/data/gsm8k.
    (tmp_path / "folder").mkdir()
    write_jsonl(tmp_path / "folder" / "test.jsonl", ROWS)
    check_problems(DatasetTask(source=str(tmp_path / "folder"), **MAPPING))


def test_default_ids_and_answer_column(tmp_path):
    rows = [{"question": "q1", "solution": "s1", "answer": "1"}, {"question": "q2", "solution": "s2", "answer": "2"}]
    task = DatasetTask(train=None, test=str(write_jsonl(tmp_path / "t.jsonl", rows)))
    assert [(p.id, p.answer, p.solution) for p in task.problems("test")] == [("test-1", "1", "s1"), ("test-2", "2", "s2")]


def test_validation_carved_from_train(tmp_path):
    rows = [{"q": f"q{i}", "sol": f"#### {i}", "uid": str(i)} for i in range(20)]
    path = str(write_jsonl(tmp_path / "train.jsonl", rows))
    mapping = {**MAPPING, "train": path, "test": None}
    task = DatasetTask(num_validation=5, seed=3, **mapping)
    train, val = task.problems("train"), task.problems("validation")
    assert len(train) == 15 and len(val) == 5
    assert {p.id for p in train} | {p.id for p in val} == {str(i) for i in range(20)}
    assert [p.id for p in val] == [p.id for p in DatasetTask(num_validation=5, seed=3, **mapping).problems("validation")]
    assert task.problems("test") == []


def test_math_answer_from_boxed_solution():
    task = DatasetTask(train=None, test=str(MATH_SAMPLE), question_field="problem", answer_field=None, id_field="unique_id", answer_format="math")
    gold = {json.loads(line)["unique_id"]: json.loads(line)["answer"] for line in MATH_SAMPLE.read_text().splitlines()}
    assert {p.id: p.answer for p in task.problems("test")} == gold
    assert task.extract_answer("so $\\boxed{\\dfrac{1}{2}}$.") == task.extract_answer("$\\boxed{\\frac{1}{2}}$")


@pytest.mark.parametrize(
    "row, message",
    [
        ({"sol": "#### 1", "uid": "x"}, "row 2: field 'q' (question) is missing"),
        ({"q": "  ", "sol": "#### 1", "uid": "x"}, "row 2: field 'q' (question) is empty"),
        ({"q": "q", "sol": "no answer line", "uid": "x"}, "row 2: no final answer in field 'sol'"),
    ],
)
def test_missing_or_empty_field_names_file_row_and_field(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(DataError, match="bad.jsonl, " + message.replace("(", r"\(").replace(")", r"\)")):
        DatasetTask(test=str(path), **MAPPING).problems("test")


def test_malformed_json_and_utf8_name_the_line(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"q": "x", \n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 3: malformed JSON"):
        DatasetTask(test=str(bad_json), **MAPPING).problems("test")
    bad_bytes = tmp_path / "latin.jsonl"
    bad_bytes.write_bytes((json.dumps(ROWS[0]) + "\n").encode() + b'{"q": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin.jsonl, line 2: not valid UTF-8"):
        DatasetTask(test=str(bad_bytes), **MAPPING).problems("test")
    with pytest.raises(DataError, match="data file not found"):
        DatasetTask(test=str(tmp_path / "nope.jsonl"), **MAPPING).problems("test")


def test_prompt_formats(tmp_path):
    path = str(write_jsonl(tmp_path / "t.jsonl", ROWS))
    zero = DatasetTask(test=path, **MAPPING)
    p = zero.problems("test")[0]
    assert zero.prompt(p) == "[MATH_TASK] Problem:\nWhat is 2+3?\n\nSolution:"
    few = DatasetTask(test=path, prompt=PromptFormat(style="few_shot", num_shots=2), **{**MAPPING, "train": path})
    text = few.prompt(p)
    blocks = text.split("\n\n\n")
    assert len(blocks) == 3 and blocks[-1] == zero.prompt(p)
    assert "What is 2+3?" not in "".join(blocks[:2])  # the problem itself is never its own example
    assert all(b.startswith("[MATH_TASK] Problem:\n") and "\n\nSolution: " in b for b in blocks[:2])
    assert few.prompt(p) == text  # deterministic


def test_chat_template(tmp_path, tiny):
    _, tokenizer = tiny
    tokenizer = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    task = DatasetTask(test=str(write_jsonl(tmp_path / "t.jsonl", ROWS)), prompt=PromptFormat(style="chat", template="{query}"), **MAPPING)
    ids = task.prompt_ids(task.problems("test")[0], tokenizer)
    assert tokenizer.decode(ids) == "<s>user: What is 2+3?\nassistant:"


def test_long_prompts_skip_and_truncate(tmp_path, tiny, caplog):
    _, tokenizer = tiny
    rows = [{"q": "What is 1+1?", "sol": "#### 2", "uid": "short"}, {"q": "What is " + "9+" * 40 + "9?", "sol": "#### 369", "uid": "long"}]
    path = str(write_jsonl(tmp_path / "t.jsonl", rows))
    short_len = len(tokenizer(DatasetTask(test=path, **MAPPING).prompt(DatasetTask(test=path, **MAPPING).problems("test")[0])).input_ids)
    limit = short_len + 5  # the "long" question adds 80 single-character tokens (digits are single tokens)
    skip = DatasetTask(test=path, max_prompt_tokens=limit, **MAPPING)
    skip.prepare(tokenizer)
    with caplog.at_level(logging.WARNING):
        assert [p.id for p in skip.problems("test")] == ["short"]
        skip.problems("test")  # reported once
    reports = [r.getMessage() for r in caplog.records if "max_prompt_tokens" in r.getMessage()]
    assert len(reports) == 1 and "1 of 2 test prompts" in reports[0] and "long" in reports[0] and "skipped" in reports[0]

    truncate = DatasetTask(test=path, max_prompt_tokens=limit, long_prompts="truncate", **MAPPING)
    truncate.prepare(tokenizer)
    problems = truncate.problems("test")
    assert [p.id for p in problems] == ["short", "long"]
    full = tokenizer(truncate.prompt(problems[1])).input_ids
    cut = truncate.prompt_ids(problems[1], tokenizer)
    assert len(cut) == limit and cut[-(limit - 1) :] == full[-(limit - 1) :]
    assert truncate.prompt_ids(problems[0], tokenizer) == tokenizer(truncate.prompt(problems[0])).input_ids


def test_grader_and_splitter_by_import_path(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    path = str(write_jsonl(tmp_path / "t.jsonl", ROWS))
    task = DatasetTask(test=path, grader="custom_reward:mentions_answer", step_splitter="lit_vine.steps.split_math", **MAPPING)
    p = task.problems("test")[0]
    assert task.reward("it is 5 or so", p) == 1.0 and task.reward("it is 6", p) == 0.0
    assert task.split_steps("First line is long enough here.\nSecond line is long enough too.") == ["First line is long enough here.", "\nSecond line is long enough too."]
    with pytest.raises(ValueError, match="grader 'nonsense'"):
        DatasetTask(test=path, grader="nonsense", **MAPPING)


def test_gsm8k_sample_rewards():
    task = DatasetTask(train=None, test=str(GSM8K_SAMPLE), solution_field="answer", answer_field=None, strip_calculator_annotations=True)
    for p in task.problems("test"):
        assert "<<" not in p.solution
        assert task.reward(p.solution, p) == 1.0
        assert task.reward(p.solution.rsplit("####", 1)[0] + "#### 123456789", p) == 0.0
        assert "".join(task.split_steps(p.solution)) == p.solution

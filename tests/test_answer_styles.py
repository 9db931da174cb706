"""benchmarks/answer_styles.py separates "showed the work" from "computed better"."""

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "answer_styles.py"
spec = importlib.util.spec_from_file_location("answer_styles", SCRIPT)
answer_styles = importlib.util.module_from_spec(spec)
spec.loader.exec_module(answer_styles)


def test_styles_counts_terse_and_worked_answers_separately(tmp_path):
    records = [
        {"greedy": "#### 5", "greedy_correct": 1.0, "samples": ["#### 4", "2+3=5\n#### 5"], "samples_correct": [0.0, 1.0]},
        {"greedy": "1+1=2\n#### 2", "greedy_correct": 1.0, "samples": [" #### 2", "1+1=3\n#### 3"], "samples_correct": [1.0, 0.0]},
    ]
    path = tmp_path / "test_before.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    s = answer_styles.styles(path)
    assert s["greedy"] == {"answers": 2, "without_working": 0.5, "accuracy_without_working": 1.0, "accuracy_with_working": 1.0}
    # samples: terse "#### 4" (wrong) and " #### 2" (right); worked: one right, one wrong
    assert s["samples"] == {"answers": 4, "without_working": 0.5, "accuracy_without_working": 0.5, "accuracy_with_working": 0.5}


def test_a_kind_with_no_answers_has_no_accuracy(tmp_path):
    path = tmp_path / "test_after.jsonl"
    path.write_text(json.dumps({"greedy": "1+1=2\n#### 2", "greedy_correct": 1.0, "samples": [], "samples_correct": []}) + "\n")
    s = answer_styles.styles(path)["greedy"]
    assert s["without_working"] == 0.0 and math.isnan(s["accuracy_without_working"])
    assert answer_styles.percent(s["accuracy_without_working"]) == "-"

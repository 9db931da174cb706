"""Reward functions that misbehave, for tests/test_bad_input.py (named by import path in a task)."""

import time


def raises(response, problem):
    raise KeyError("no such field")


def hangs(response, problem):
    time.sleep(3)
    return 1.0


def nan(response, problem):
    return float("nan")

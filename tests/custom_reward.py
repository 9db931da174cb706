"""A user reward for the pluggable-grader test: 1.0 if the response mentions the answer at all."""


def mentions_answer(response, problem):
    return float(problem.answer in response)

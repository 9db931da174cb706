"""math-verify in a child process (started by ``lit_vine.grading.MathGrader``, run by file path so
it imports neither torch nor the ``lit_vine`` package).

Protocol, one JSON line per request on stdin: ``[gold, predicted]`` (LaTeX answers); one line per
reply on stdout: ``1`` if equivalent, else ``0``. ``ready`` is printed once imports are done. The
parent enforces the time limit by killing this process, so math-verify's own signal timeouts are off.
"""

import json
import logging
import sys

from math_verify import parse, verify

logging.disable(logging.WARNING)  # "timeout disabled" notices: the parent owns the limit


def equivalent(gold: str, predicted: str) -> bool:
    wrap = lambda answer: parse(f"${answer}$", parsing_timeout=None)  # noqa: E731
    return verify(wrap(gold), wrap(predicted), timeout_seconds=None)


def main() -> None:
    equivalent("1", "1")  # warm the parser caches before announcing readiness
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            verdict = equivalent(*json.loads(line))
        except Exception:  # anything unparsable is simply not equivalent
            verdict = False
        print("1" if verdict else "0", flush=True)


if __name__ == "__main__":
    main()

"""math-verify in a child process, started by ``lit_vine.grading.MathGrader`` and run by file path so
that it imports neither torch nor the ``lit_vine`` package: its folder is ``sys.path[0]``, from which
it takes ``equivalence.py`` alone.

Protocol, one JSON object per request line on stdin: the keyword arguments of
:func:`equivalence.equal`; one line per reply on stdout: ``1`` if equal, else ``0``. ``ready`` is
printed once imports are done. The parent enforces the time limit by killing this process, so
math-verify's own signal timeouts are off.
"""

import json
import sys

from equivalence import equal


def main() -> None:
    equal([["1"]], [["1"]])  # warm the parser caches before announcing readiness
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            verdict = equal(**json.loads(line))
        except Exception:  # anything unparsable is simply not equal
            verdict = False
        print("1" if verdict else "0", flush=True)


if __name__ == "__main__":
    main()

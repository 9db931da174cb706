from lit_vine.tasks.arithmetic import ArithmeticTask
from lit_vine.tasks.base import Problem, Task

__all__ = ["ArithmeticTask", "Problem", "Task"]

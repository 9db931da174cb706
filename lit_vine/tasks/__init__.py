from lit_vine.tasks.arithmetic import ArithmeticTask
from lit_vine.tasks.base import Problem, Task
from lit_vine.tasks.dataset import DatasetTask
from lit_vine.tasks.prompts import PromptFormat

__all__ = ["ArithmeticTask", "DatasetTask", "Problem", "PromptFormat", "Task"]

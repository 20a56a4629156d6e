"""Tasks differ in data, loss, metrics and export spec; the training loop is shared (engine.py). Importing this
package is light: the implementations (and torch) load on the first `get_task` or `names`."""

from dltorch.tasks.registry import Evaluation, Task, get_task, names, register_task

__all__ = ["Evaluation", "Task", "get_task", "names", "register_task"]

"""What ``--task`` / ``--data`` name: a built-in task, a user's data, or a user's plug-in module.

- `BUILT_IN_TASKS`: name -> generator (``shapes-vqa``); `load_task` looks a name up there.
- `require_task_or_data`: the one check that exactly one of task / data is given (the CLI commands,
  the search request and `load_task_or_data` all call it).
- `import_task_plugin`: imports ``module:function`` (``--task my_tasks:make_task``) and returns the
  module and the function, with a one-line error when either is missing (training calls the
  function; the search ships the module's folder to Ray workers).

This module imports no training machinery (Lightning, models), so the CLI and the search driver can
use it cheaply.
"""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path
from types import ModuleType
from typing import Callable, NamedTuple, Optional

from autoaug.errors import AutoaugInputError, ParameterError

from .records import TaskData
from .shapes_vqa import TASK_NAME as SHAPES_VQA, make_shapes_vqa
from .user_data import load_data

# A built-in task: its generator takes ``seed``, ``image_size`` and its own options and returns a TaskData.
BUILT_IN_TASKS: dict[str, Callable[..., TaskData]] = {SHAPES_VQA: make_shapes_vqa}
TASKS: tuple[str, ...] = tuple(BUILT_IN_TASKS)


def require_task_or_data(task: Optional[str], data: Optional[str | Path],
                         names: tuple[str, str] = ("task", "data")) -> None:
    """Exactly one of ``task`` (a task name or ``module:function``) and ``data`` (a path).

    ``names`` are the words the message uses for the two: the parameters by default, the flags from
    the CLI (``("--task NAME", "--data PATH")``), so each caller's user reads what they typed."""
    if (task is None) == (data is None):
        raise AutoaugInputError(f"give exactly one of {names[0]} or {names[1]}")


def load_task(name: str, seed: int = 0, image_size: int = 32, **options) -> TaskData:
    """A built-in task by name (``shapes-vqa``); ``options`` go to its generator (split sizes...)."""
    try:
        make = BUILT_IN_TASKS[name]
    except (KeyError, TypeError):
        raise ParameterError("task", f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}") from None
    return make(seed=seed, image_size=image_size, **options)


def load_task_or_data(
    task: Optional[str] = None,
    data: Optional[str | Path] = None,
    seed: int = 0,
    image_size: int = 32,
    **options,
) -> TaskData:
    """What ``--task NAME`` / ``--data PATH`` resolve to (exactly one of them)."""
    require_task_or_data(task, data)
    if task is not None:
        return load_task(task, seed=seed, image_size=image_size, **options)
    return load_data(data, image_size=image_size, seed=seed, **options)


class TaskPluginError(RuntimeError):
    """An exception raised inside a user's ``--task module:function`` code: not bad input but their
    bug, so the message carries their traceback (the CLI prints the message)."""

    carries_user_traceback = True  # the CLI prints all of it, not only the first line

    def __init__(self, task: str, doing: str, error: BaseException) -> None:
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
        super().__init__(f"task plug-in {task}: {doing} raised {type(error).__name__}: {error}\n{trace}")


class ImportedPlugin(NamedTuple):
    """A ``module:function`` plug-in once imported: the module and the function it names."""

    module: ModuleType
    factory: Callable


def import_task_plugin(task: str) -> ImportedPlugin:
    """Import ``module:function`` (``task``) and return the module and the callable it names.

    A malformed name, a module that is not on the path or a missing function is bad input
    (`ParameterError` on ``task``, exit 2); an exception raised while the user's module imports is
    theirs (`TaskPluginError`, with their traceback, exit 1).
    """
    module_name, _, function_name = task.partition(":")
    if not module_name or not function_name:
        raise ParameterError("task", f"{task}: expected module:function, e.g. my_tasks:make_task")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            raise ParameterError("task", f"{task}: no module named {error.name!r} "
                                 "(is its folder on PYTHONPATH?)") from None
        raise TaskPluginError(task, f"importing {module_name}", error) from error
    except Exception as error:
        raise TaskPluginError(task, f"importing {module_name}", error) from error
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ParameterError("task", f"{task}: module {module_name!r} has no function {function_name!r}")
    return ImportedPlugin(module, factory)

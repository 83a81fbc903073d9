"""What `hyperexport export` was asked for, from its flags alone: light, so that a bad combination is an
error before torch loads."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from hyperexport.errors import UserError


def export_request(task: str | None, tasks: str | None, all_tasks: bool, add_task: str | None, to: Path | None,
                   fmt: str) -> Literal["single", "multitask", "add"]:
    """What `hyperexport export` was asked for: "single", "multitask" or "add" (one of them, else a UserError)."""
    asked = [flag for flag, given in (("--task", task), ("--tasks", tasks), ("--all", all_tasks or None),
                                      ("--add-task", add_task)) if given is not None]
    if len(asked) != 1:
        given = f" (not {' and '.join(asked)})" if asked else ""
        raise UserError("name one task with --task, several with --tasks a,b,c (or --all), or --add-task T --to "
                        f"EXPORT{given}")
    if (add_task is None) != (to is None):
        raise UserError("--add-task T needs --to EXPORT: the multi-task export to add the task to")
    if fmt not in ("onnx", "tensorrt"):
        raise UserError(f"unknown format '{fmt}': use onnx or tensorrt")
    if asked[0] != "--task" and fmt != "onnx":
        raise UserError("a multi-task export is ONNX: drop --format tensorrt (TensorRT engines are built per task)")
    if asked[0] == "--task":
        return "single"
    return "add" if asked[0] == "--add-task" else "multitask"

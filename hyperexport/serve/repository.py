"""The model repository `serve` hands to Triton: per export and interface (`serve.interfaces`) one
Python-backend model, `models/<name>_<interface>/config.pbtxt` (Triton's `ModelConfig` message, with the
export's absolute path as a parameter) and `1/model.py`, two lines that import hyperexport's model class.
No file of the export is copied or linked: the models read the export folder where it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts.export import ExportFolder
from hyperexport.contracts.names import MODEL_VERSION, MODELS_DIR, PYTHON_MODEL_FILE, TRITON_CONFIG_FILE
from hyperexport.serve.interfaces import (
    PARAMETER_EXPORT,
    PARAMETER_INTERFACE,
    PARAMETER_LABEL_NAMES,
    PARAMETER_LABELS,
    Interface,
    interfaces_for,
    served_model_name,
)
from hyperexport.serve.tasks import ServedTasks
from hyperexport.serve.triton_config import config_text, python_model_config

MODEL_SCRIPT = '''"""Written by `hyperexport serve`: Triton's Python backend runs it; the model is hyperexport's."""

from hyperexport.serve.python_model import TritonPythonModel  # noqa: F401
'''


@dataclass(frozen=True)
class Batching:
    """How Triton schedules every served model."""
    max_batch_size: int
    max_queue_delay_us: int
    instances: int


@dataclass(frozen=True)
class ServedExport:
    name: str  # the models' name prefix: the export's task, or the NAME of NAME=EXPORT
    export: ExportFolder

    @property
    def interfaces(self) -> tuple[Interface, ...]:
        return interfaces_for(self.export.heads)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(served_model_name(self.name, interface.name) for interface in self.interfaces)


def write_repository(folder: Path, served: list[ServedExport], batching: Batching) -> Path:
    """Write every served model under `folder/models/`; returns that model repository."""
    repository = folder / MODELS_DIR
    for entry in served:
        tasks = ServedTasks.of(entry.export)
        labels, names = json.dumps(tasks.labels_json()), json.dumps(tasks.label_names_json())
        for interface, model in zip(entry.interfaces, entry.model_names):
            parameters = {PARAMETER_EXPORT: str(entry.export.path.resolve()), PARAMETER_INTERFACE: interface.name,
                          PARAMETER_LABELS: labels, PARAMETER_LABEL_NAMES: names}
            config = python_model_config(model, interface, batching.max_batch_size, batching.max_queue_delay_us,
                                         batching.instances, parameters)
            (repository / model / MODEL_VERSION).mkdir(parents=True)
            (repository / model / TRITON_CONFIG_FILE).write_text(config_text(config))
            (repository / model / MODEL_VERSION / PYTHON_MODEL_FILE).write_text(MODEL_SCRIPT)
    return repository

"""The model Triton's Python backend runs for `serve`: each served model's `1/model.py` imports this class.

Triton calls `initialize` once per model instance (a process of its own), `execute` with the requests its
dynamic batcher joined, and `finalize` when the model unloads (the server stops). The work is
`serve.handler.ServedModel`'s; this adapter only moves tensors between Triton's types and numpy and turns
a `RequestError` into that request's error response. `triton_python_backend_utils` exists only inside
the backend's process, so it is imported there.
"""

from __future__ import annotations

import json
from typing import Any

from hyperexport.serve.handler import RequestError, ServedModel
from hyperexport.serve.interfaces import PARAMETER_EXPORT, PARAMETER_INTERFACE


class TritonPythonModel:
    """Triton's Python-backend model interface over one `ServedModel`."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.model = ServedModel(parameters[PARAMETER_EXPORT], parameters[PARAMETER_INTERFACE], args["model_name"])
        self.model.__enter__()

    def execute(self, requests: list) -> list:
        import triton_python_backend_utils as pb_utils

        feeds = [{tensor.name(): tensor.as_numpy() for tensor in request.inputs()} for request in requests]
        responses = []
        for result in self.model.run(feeds):
            if isinstance(result, RequestError):
                code = pb_utils.TritonError.INTERNAL if result.internal else pb_utils.TritonError.INVALID_ARG
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result), code)))
            else:
                tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        self.model.__exit__(None, None, None)

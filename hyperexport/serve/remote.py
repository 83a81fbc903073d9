"""`predict --url`: examples labelled by a `hyperexport serve` server instead of a local export, with
`predict`'s results. The examples travel as `text_input` strings (TEXT as given; each JSONL line's
object as JSON), one request per example, so a server-side error names the example it is about; the
server parses, formats, tokenizes and runs them (`serve.handler`). Over gRPC (`HOST:PORT`,
`grpc://HOST:PORT`) or HTTP (`http://HOST:PORT`), through Triton's own clients.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hyperexport.errors import UserError
from hyperexport.runtime.examples import ONE_SOURCE, json_kind, jsonl_values
from hyperexport.serve.interfaces import (
    LABEL,
    PARAMETER_LABEL_NAMES,
    PARAMETER_LABELS,
    PROBABILITIES,
    SCORES,
    TASK_INPUT,
    TEXT_INPUT,
    TEXT_OUTPUT,
    served_model_name,
)

_GET_TRITONCLIENT = "pip install 'tritonclient[grpc,http]' (or pip install -e '.[serve]')"


class RemoteModels:
    """Triton's HTTP or gRPC client behind three calls; every failure a one-line `UserError`."""

    def __init__(self, url: str):
        self.url = url
        self.http = url.startswith("http://")
        try:
            if self.http:
                import tritonclient.http as client
            else:
                import tritonclient.grpc as client
        except ImportError:
            raise UserError(f"predict --url needs tritonclient: {_GET_TRITONCLIENT}") from None
        self.module = client
        address = url.removeprefix("http://").removeprefix("grpc://")
        if ":" not in address or "/" in address:
            raise UserError(f"--url '{url}' is not HOST:PORT (gRPC) or http://HOST:PORT")
        self.client = client.InferenceServerClient(url=address)

    def __enter__(self) -> RemoteModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def ready(self, model: str) -> bool:
        try:
            return bool(self._call(lambda: self.client.is_model_ready(model)))
        except UserError as error:
            raise UserError(f"no server answers at {self.url} ({error}): start one with `hyperexport serve EXPORT`") \
                from None

    def parameters(self, model: str) -> dict[str, str]:
        config = self._call(lambda: self.client.get_model_config(model) if self.http
                            else self.client.get_model_config(model, as_json=True)["config"])
        return {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = []
        for name, array in inputs.items():
            tensor = self.module.InferInput(name, list(array.shape), "BYTES")
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = self._call(lambda: self.client.infer(model, tensors))
        names = [output["name"] for output in result.get_response()["outputs"]] if self.http else \
            [output.name for output in result.get_response().outputs]
        return {name: result.as_numpy(name) for name in names}

    def _call(self, call):
        from tritonclient.utils import InferenceServerException

        try:
            return call()
        except InferenceServerException as error:
            message = (error.message() or str(error)).strip()
            raise UserError(message.removeprefix("[request id: <id_unknown>] ").splitlines()[0]) from None
        except (ConnectionError, OSError) as error:
            raise UserError(error.strerror or str(error)) from None


def example_texts(examples: Sequence[dict] | None = None, text: str | None = None,
                  input_file: str | Path | None = None) -> list[str]:
    """The `text_input` of each example: TEXT as given, a JSON object per JSONL line or list item."""
    if sum(source is not None for source in (examples, text, input_file)) != 1:
        raise UserError(ONE_SOURCE)
    if text is not None:
        return [text]
    values = list(jsonl_values(Path(input_file))) if input_file is not None else \
        [(f"example {index}", value) for index, value in enumerate(examples or [])]
    if not values:
        raise UserError("no examples given: pass at least one dict of the task's fields")
    for where, value in values:
        if not isinstance(value, dict):
            raise UserError(f"{where} is {json_kind(value)}, not a JSON object: give the task's fields")
    return [json.dumps(value) for _, value in values]


def predict_remote(url: str, name: str, examples: Sequence[dict] | None = None, *, text: str | None = None,
                   input_file: str | Path | None = None, task: str | None = None) -> list[dict]:
    """`predict`'s results for the examples, from the models the server at `url` serves as `name`
    (`<name>_classify`, else `<name>_generate`); `task`: the task of a multi-task export."""
    texts = example_texts(examples, text, input_file)
    with RemoteModels(url) as remote:
        heads = [head for head in ("classify", "generate") if remote.ready(served_model_name(name, head))]
        if not heads:
            raise UserError(f"the server at {url} serves no {served_model_name(name, 'classify')} or "
                            f"{served_model_name(name, 'generate')}: serve the export as {name}")
        model = served_model_name(name, heads[0])
        parameters = remote.parameters(model)
        labels, named = _labels(parameters, model, task), _labels(parameters, model, task, PARAMETER_LABEL_NAMES)
        extra = {} if task is None else {TASK_INPUT: np.array([[task.encode()]], dtype=np.object_)}
        results = []
        for index, payload in enumerate(texts):
            try:
                outputs = remote.infer(model, {TEXT_INPUT: np.array([[payload.encode()]], dtype=np.object_), **extra})
            except UserError as error:
                raise UserError(f"example {index}: {error}") from None
            result = _result(index, outputs, labels)
            names = dict(zip(labels, named))
            results.append({**({"task": task} if task is not None else {}), **result,
                            "label_name": names.get(result["label"], result["label"])})
    return results


def _labels(parameters: dict[str, str], model: str, task: str | None, key: str = PARAMETER_LABELS) -> list[str]:
    """The label strings (or, with `key`, their names) of the served task."""
    tables = json.loads(parameters.get(key, "{}"))
    if task is None and len(tables) == 1:
        return next(iter(tables.values()))
    if task not in tables:
        raise UserError(f"{model} serves tasks {', '.join(tables)}: name one")
    return tables[task]


def _result(index: int, outputs: dict[str, np.ndarray], labels: list[str]) -> dict:
    if TEXT_OUTPUT in outputs:
        return {"index": index, "label": outputs[TEXT_OUTPUT].reshape(-1)[0].decode()}
    scores, probabilities = outputs[SCORES][0], outputs[PROBABILITIES][0]
    return {"index": index, "label": outputs[LABEL].reshape(-1)[0].decode(),
            "scores": {label: float(s) for label, s in zip(labels, scores)},
            "probabilities": {label: float(p) for label, p in zip(labels, probabilities)}}

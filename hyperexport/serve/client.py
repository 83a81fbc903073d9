"""The deployed client: a task's examples labelled by its models on a Triton server, through the same
heads as `predict` (`runtime.heads.label_examples`). A deployment's `clients/<task>/client.py` runs
`main` here; `TritonBackend` is the `GraphBackend` over Triton's gRPC endpoint.

    python triton-repo/clients/rte/client.py '{"sentence1": "...", "sentence2": "..."}' [--url localhost:8001]
    python triton-repo/clients/rte/client.py --local '...'   # ONNX deployments: the repository's files, no server
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hyperexport.contracts.deploy import DeployFacts
from hyperexport.contracts.names import (
    CLASSIFY_GRAPH,
    GENERATE_GRAPHS,
    MODEL_VERSION,
    MODELS_DIR,
    TOKENIZER_DIR,
    TRITON_MODEL_FILES,
    graph_stem,
)
from hyperexport.contracts.task import TaskFacts
from hyperexport.contracts.task_table import TaskTable, has_task_table
from hyperexport.errors import UserError
from hyperexport.runtime.backends import (
    Feeds,
    GraphBackend,
    OnnxRuntimeBackend,
    Outputs,
)
from hyperexport.runtime.examples import examples_from_list, read_task_sources
from hyperexport.runtime.heads import label_examples
from hyperexport.runtime.multitask import label_task_examples
from hyperexport.tasks.registry import template_fields

if TYPE_CHECKING:
    from tritonclient.grpc import InferenceServerClient

DEFAULT_URL = "localhost:8001"
_GET_TRITONCLIENT = "pip install 'tritonclient[grpc]'"


class TritonBackend:
    """Deployed models on a Triton server (gRPC): `models` maps each graph file to its model name."""

    def __init__(self, url: str, models: Mapping[str, str], max_batch: int | None = None):
        self.url, self.models, self._max_batch = url, dict(models), max_batch
        self.client: InferenceServerClient | None = None  # connected while inside `with`
        self.inputs: dict[str, set[str]] = {}  # model -> its input names (from Triton's metadata)

    def __enter__(self) -> TritonBackend:
        try:
            import tritonclient.grpc as grpcclient
        except ImportError:
            raise UserError(f"the Triton client needs tritonclient: {_GET_TRITONCLIENT}") from None
        self.client = grpcclient.InferenceServerClient(url=self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    def has(self, graph: str) -> bool:
        return graph in self.models

    def infer(self, graph: str, feeds: Feeds) -> Outputs:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        model = self.models[graph]
        assert self.client is not None, "run the backend inside `with`"
        try:
            wanted = self._input_names(model)
            requests = []
            for name, array in feeds.items():
                if name in wanted:
                    array = array[:, None] if array.ndim == 1 else array  # [batch] goes as [batch, 1] (its reshape)
                    request = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                    request.set_data_from_numpy(np.ascontiguousarray(array))
                    requests.append(request)
            result = self.client.infer(model, requests)
        except InferenceServerException as error:
            raise UserError(f"Triton at {self.url} could not run {model}: {_first_line(error)}") from None
        return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}

    def _input_names(self, model: str) -> set[str]:
        assert self.client is not None, "run the backend inside `with`"
        if model not in self.inputs:
            self.inputs[model] = {tensor.name for tensor in self.client.get_model_metadata(model).inputs}
        return self.inputs[model]


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def graph_models(facts: DeployFacts) -> dict[str, str]:
    """{graph file: deployed model name} from deploy.json's {graph stem: model name}."""
    graphs = (CLASSIFY_GRAPH, *GENERATE_GRAPHS.values())
    return {graph: facts.models[graph_stem(graph)] for graph in graphs if graph_stem(graph) in facts.models}


def deployed_backend(client_dir: Path, url: str = DEFAULT_URL, local: bool = False) -> GraphBackend:
    """The deployed models of `client_dir`'s task: on the Triton server at `url`, or (`local`, ONNX
    deployments) the repository's own model files with ONNX Runtime on the CPU."""
    facts = DeployFacts.read(client_dir)
    models = graph_models(facts)
    if not local:
        return TritonBackend(url, models, facts.max_batch_size)
    if facts.format != "onnx":
        raise UserError(f"--local runs ONNX deployments; {facts.task} was deployed as {facts.format}")
    repository = Path(client_dir).resolve().parents[1] / MODELS_DIR
    paths = {graph: repository / name / MODEL_VERSION / TRITON_MODEL_FILES["onnx"] for graph, name in models.items()}
    return OnnxRuntimeBackend(repository, paths=paths)


def run_deployed(client_dir: str | Path, examples: Sequence[dict], backend: GraphBackend,
                 head: str | None = None, batch_size: int | None = None) -> list[dict]:
    """`predict`'s results for `examples` (dicts of the task's fields) from the deployed models behind
    `backend`; `head`: classify or generate (default: the deployment's)."""
    from hyperexport.model.build import load_tokenizer

    folder = Path(client_dir)
    description = DeployFacts.read(folder)
    tokenizer = load_tokenizer(str(folder / TOKENIZER_DIR))
    head, batch_size = head or description.head, batch_size or description.max_batch_size
    if has_task_table(folder):  # a multi-task deployment: each example names its task
        table = TaskTable.read(folder)
        rows, sources = read_task_sources(table, None, examples=examples)
        with backend:
            return label_task_examples(backend, tokenizer, table, rows, sources, description.token_ids, head,
                                       batch_size)
    facts = TaskFacts.read(folder)
    sources = [facts.template.format(**row) for row in examples_from_list(examples, facts.task,
                                                                           template_fields(facts.template))]
    with backend:
        return label_examples(backend, tokenizer, facts, sources, description.token_ids, head, batch_size)


def main(client_dir: Path, argv: list[str] | None = None) -> int:
    """The client script of a deployment: one example in, its result as JSON out; bad input or an
    unreachable server is one line on stderr and exit 2."""
    parser = argparse.ArgumentParser(description=f"Label examples of the task(s) deployed in {client_dir}.")
    parser.add_argument("example", help="a JSON object of the task's fields (and `task` for a multi-task deployment)")
    parser.add_argument("--url", default=DEFAULT_URL, help="Triton gRPC endpoint (default %(default)s)")
    parser.add_argument("--local", action="store_true", help="run the ONNX models with ONNX Runtime instead")
    parser.add_argument("--head", choices=("classify", "generate"), help="default: the deployment's")
    args = parser.parse_args(argv)
    try:
        example = json.loads(args.example)
        results = run_deployed(client_dir, [example], deployed_backend(client_dir, args.url, args.local), args.head)
    except json.JSONDecodeError as error:
        print(f"error: the example is not JSON ({error})", file=sys.stderr)
        return 2
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2))
    return 0

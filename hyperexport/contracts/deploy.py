"""A Triton deployment (`deploy`): triton-repo/.

    models/<task>_<graph>/config.pbtxt, 1/model.onnx | 1/model.plan    the model repository
    clients/<task>/tokenizer/, task.json, deploy.json, client.py       what a client needs

`DeployFacts` is deploy.json: the model names per graph, the head, the batch limit and the ids the
client's greedy loop needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hyperexport.contracts.export import GenerationIds
from hyperexport.contracts.fields import ContractError, from_json, to_json
from hyperexport.contracts.names import DEPLOY_FILE
from hyperexport.contracts.publish import write_json
from hyperexport.errors import UserError


@dataclass(frozen=True)
class DeployFacts:
    task: str
    format: str
    precision: str
    head: str  # the default head of the client: classify when deployed, else generate
    max_batch_size: int
    models: dict[str, str]  # graph stem (classify, encoder, decoder, decoder_with_past) -> Triton model name
    token_ids: GenerationIds | None  # None without the generate head
    export: str  # the export folder it came from (as given)
    export_manifest_sha256: str
    tensorrt_version: str | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None

    @classmethod
    def read(cls, client_dir: Path) -> DeployFacts:
        path = Path(client_dir) / DEPLOY_FILE
        try:
            return from_json(cls, json.loads(path.read_text()), DEPLOY_FILE)
        except (OSError, json.JSONDecodeError, ContractError) as error:
            raise UserError(f"cannot read {path} ({error}): deploy the task again") from None

    def write(self, client_dir: Path) -> None:
        write_json(Path(client_dir) / DEPLOY_FILE, to_json(self))

"""`deploy`: a verified export as a Triton Inference Server model repository, plus a client folder.

`<triton-repo>/models/` is the model repository (`tritonserver --model-repository <triton-repo>/models`):
one model per graph, named `<task>_<graph>` (`rte_classify`, `rte_encoder`, `rte_decoder`,
`rte_decoder_with_past`), each `config.pbtxt` + `1/model.plan` (TensorRT) or `1/model.onnx` (ONNX
Runtime). `<triton-repo>/clients/<task>/` holds what a client needs and Triton must not see: the
tokenizer, `task.json`, `deploy.json` (model names, token ids, batch limit) and `client.py`.

Generation runs client-side: Triton ensembles cannot loop, so the greedy loop
(`generation.greedy_generate`) calls the encoder, decoder and decoder-with-past models through
`infer(model, inputs)`; `run_deployed` is that client, with a Triton gRPC `infer`
(`triton_model_infer`) or an ONNX Runtime one over the repository's own files
(`onnxruntime_model_infer`, for checks without a server).

An export is deployed only if `verify` passed on it (`parity_report.json`). Every config.pbtxt is
parsed with Triton's protobuf and compared with the io spec before anything is moved into place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from hyperexport.contracts import publish as artifacts
from hyperexport.errors import UserError
from hyperexport.runtime.generation import greedy_generate
from hyperexport.export.onnx import CLASSIFY_FILE, IO_SPEC_FILE
from hyperexport.serve.triton_config import MODEL_FILES, PLATFORMS, check_model_config, model_config

MODELS_DIR, CLIENTS_DIR = "models", "clients"
DEPLOY_FILE = "deploy.json"
CLIENT_FILE = "client.py"
VERSION = "1"
ONNX_MAX_BATCH = 32  # an ONNX export has no profile; Triton's batcher still needs a bound
ModelInfer = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def model_name(task: str, graph: str) -> str:
    """`rte`, `decoder_with_past_model.onnx` -> `rte_decoder_with_past`."""
    return f"{task}_{Path(graph).stem.removesuffix('_model')}"


def require_passed_parity(export_dir: Path, manifest: dict) -> dict:
    path = export_dir / artifacts.PARITY_REPORT_FILE
    verify_hint = f"run `hyperexport verify {export_dir}` first"
    if not path.is_file():
        raise UserError(f"{export_dir} has no {artifacts.PARITY_REPORT_FILE}: {verify_hint}")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON: {verify_hint}") from None
    if report.get("passed") is not True:
        raise UserError(f"{export_dir} failed verify (see {path}): fix the export and verify it before deploying")
    if report.get("precision") != manifest.get("precision"):
        raise UserError(f"{path} is for precision {report.get('precision')}, the export is "
                        f"{manifest.get('precision')}: {verify_hint}")
    return report


def deploy(task: str, fmt: str = "tensorrt", triton_repo: str | Path = "triton-repo", export_dir: str | Path | None = None,
           overwrite: bool = False) -> dict:
    """Write the task's models into `<triton_repo>/models/` and its client folder; returns deploy.json."""
    if fmt not in PLATFORMS:
        raise UserError(f"unknown format '{fmt}': use tensorrt or onnx")
    export_dir = Path(export_dir) if export_dir is not None else Path("exports") / task / fmt
    if not (export_dir / artifacts.MANIFEST_FILE).is_file():
        raise UserError(f"no export at {export_dir}: run `hyperexport export --task {task} --format {fmt}` "
                        f"and `hyperexport verify {export_dir}`")
    manifest = artifacts.check_manifest(export_dir, "export")
    if manifest.get("format") != fmt or manifest.get("task") != task:
        raise UserError(f"{export_dir} is a {manifest.get('format')} export of {manifest.get('task')}, not {fmt} of "
                        f"{task}: pass the matching --export")
    require_passed_parity(export_dir, manifest)
    spec = json.loads((export_dir / IO_SPEC_FILE).read_text())
    if fmt == "tensorrt":
        from hyperexport.export.tensorrt.build import plan_name

        missing = [plan_name(graph) for graph in sorted(spec) if not (export_dir / plan_name(graph)).is_file()]
        if missing:
            raise UserError(f"{export_dir} has no {missing[0]}: build the engines with "
                            f"`hyperexport export --task {task} --format tensorrt --overwrite`")
    max_batch = manifest["profile_ranges"]["batch"][2] if fmt == "tensorrt" else ONNX_MAX_BATCH
    repo = Path(triton_repo)
    names = {graph: model_name(task, graph) for graph in sorted(spec)}
    targets = [repo / MODELS_DIR / name for name in names.values()] + [repo / CLIENTS_DIR / task]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not overwrite:
        raise UserError(f"{existing[0]} already exists: pass --overwrite to replace the task's models")
    new_parent = artifacts.first_missing(repo)
    try:
        with artifacts.write_errors(repo, "free disk space, make the folder writable, or choose another --triton-repo",
                                    option="--triton-repo"):
            staging = artifacts.temporary_sibling(repo / f"{task}-deploy")  # .<task>-deploy.<pid>.* in the repo
            try:
                for graph, name in names.items():
                    _write_model(staging / MODELS_DIR / name, export_dir, graph, spec[graph], name, fmt, max_batch)
                description = _write_client(staging / CLIENTS_DIR / task, export_dir, manifest, names, max_batch)
                for target in targets:  # each model folder is replaced in one step
                    target.parent.mkdir(parents=True, exist_ok=True)
                    artifacts.replace_folder(staging / target.relative_to(repo), target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        artifacts.remove_if_empty(new_parent)  # a failed first deploy leaves no empty repository behind
        raise
    return description


def _write_model(folder: Path, export_dir: Path, graph: str, graph_spec: dict, name: str, fmt: str,
                 max_batch: int) -> None:
    text = model_config(name, graph_spec, graph, fmt, max_batch)
    problems = check_model_config(text, name, graph_spec, graph, fmt, max_batch)
    if problems:  # a bug in model_config, not bad input
        raise RuntimeError(f"generated config.pbtxt for {name} does not match the io spec: {problems[0]}")
    (folder / VERSION).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(text)
    if fmt == "tensorrt":
        from hyperexport.export.tensorrt.build import plan_name

        shutil.copy(export_dir / plan_name(graph), folder / VERSION / MODEL_FILES[fmt])
        return
    shutil.copy(export_dir / graph, folder / VERSION / MODEL_FILES[fmt])
    for data_file in _external_data_files(export_dir / graph):  # referenced by relative name: keep it
        shutil.copy(export_dir / data_file, folder / VERSION / data_file)


def _external_data_files(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return sorted({entry.value for tensor in graph.initializer if tensor.data_location == onnx.TensorProto.EXTERNAL
                   for entry in tensor.external_data if entry.key == "location"})


def _write_client(folder: Path, export_dir: Path, manifest: dict, names: dict[str, str], max_batch: int) -> dict:
    from hyperexport.materialize import TASK_FILE

    folder.mkdir(parents=True)
    shutil.copytree(export_dir / artifacts.TOKENIZER_DIR, folder / artifacts.TOKENIZER_DIR)
    shutil.copy(export_dir / TASK_FILE, folder / TASK_FILE)
    config = json.loads((export_dir / "config.json").read_text()) if (export_dir / "config.json").is_file() else {}
    description = {
        "task": manifest["task"], "format": manifest["format"], "precision": manifest["precision"],
        "head": "classify" if CLASSIFY_FILE in names else "generate", "max_batch_size": max_batch,
        "models": {Path(graph).stem.removesuffix("_model"): name for graph, name in names.items()},
        "token_ids": {key: config[key] for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id")
                      if key in config},
        **{fact: manifest[fact] for fact in ("tensorrt_version", "gpu_name", "compute_capability") if fact in manifest},
        "export": str(export_dir), "export_manifest_sha256": artifacts.sha256_file(export_dir / artifacts.MANIFEST_FILE),
    }
    artifacts.write_json(folder / DEPLOY_FILE, description)
    (folder / CLIENT_FILE).write_text(CLIENT_SCRIPT.format(task=manifest["task"]))
    return description


# ---- the client -----------------------------------------------------------------------------------
def run_deployed(client_dir: str | Path, examples: Sequence[dict], infer: ModelInfer,
                 batch_size: int | None = None, head: str | None = None) -> list[dict]:
    """`predict`'s results for `examples` (dicts of the task's fields) from deployed models reached
    through `infer(model name, inputs)`: label scores with the classify model, or greedy generation
    (`head="generate"`, the default when no classify model was deployed)."""
    from hyperexport.model.build import load_tokenizer
    from hyperexport.runtime.predict import _batches, _examples_from_list, label_results
    from hyperexport.tasks.registry import template_fields

    folder = Path(client_dir)
    description = json.loads((folder / DEPLOY_FILE).read_text())
    facts = json.loads((folder / "task.json").read_text())
    rows = _examples_from_list(examples, facts["task"], template_fields(facts["template"]))
    sources = [facts["template"].format(**row) for row in rows]
    tokenizer = load_tokenizer(str(folder / artifacts.TOKENIZER_DIR))
    batches = _batches(tokenizer, sources, facts["max_source_length"], batch_size or description["max_batch_size"], "np")
    models = description["models"]
    head = head or description["head"]
    if head not in ("classify", "generate") or (head == "generate" and "encoder" not in models):
        raise UserError(f"head '{head}' is not deployed for {facts['task']}: use {description['head']}")
    if head == "classify":
        scores = np.concatenate([infer(models["classify"], batch)["scores"] for batch in batches])
        return label_results(scores, facts["labels"])
    ids = description["token_ids"]
    by_graph = lambda graph, inputs: infer(models[graph], inputs)  # noqa: E731
    texts = []
    for batch in batches:
        tokens = greedy_generate(by_graph, batch["input_ids"], batch["attention_mask"], facts["max_new_tokens"],
                                 ids["decoder_start_token_id"], ids["eos_token_id"], ids["pad_token_id"])
        texts += [text.strip() for text in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return [{"index": index, "label": text} for index, text in enumerate(texts)]


def triton_model_infer(url: str = "localhost:8001") -> ModelInfer:
    """`infer` through a Triton server's gRPC endpoint (needs `tritonclient[grpc]`)."""
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import np_to_triton_dtype
    except ImportError:
        raise UserError("the Triton client needs tritonclient: pip install 'tritonclient[grpc]'") from None
    client = grpcclient.InferenceServerClient(url=url)

    def infer(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        requests = []
        for name, array in inputs.items():
            request = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            request.set_data_from_numpy(np.ascontiguousarray(array))
            requests.append(request)
        result = client.infer(model, requests)
        return {output.name: result.as_numpy(output.name) for output in result.get_response().outputs}

    return infer


def onnxruntime_model_infer(models_dir: str | Path) -> ModelInfer:
    """`infer` over an ONNX deployment's own `model.onnx` files with ONNX Runtime on the CPU (no server)."""
    import onnxruntime as ort

    sessions: dict = {}

    def infer(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if model not in sessions:
            path = Path(models_dir) / model / VERSION / MODEL_FILES["onnx"]
            sessions[model] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        session = sessions[model]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))

    return infer


CLIENT_SCRIPT = '''"""Label examples of task {task} with its models on a Triton server (client-side greedy decoding).

    tritonserver --model-repository ../../models
    python client.py '{{"sentence1": "...", "sentence2": "..."}}' [--url localhost:8001]
    python client.py --local '...'    # ONNX deployments only: the repository's model.onnx files, no server

Needs `pip install hyperexport 'tritonclient[grpc]'` (hyperexport for the tokenizer and the loop).
"""

import argparse
import json
from pathlib import Path

from hyperexport.serve.deploy import onnxruntime_model_infer, run_deployed, triton_model_infer

HERE = Path(__file__).resolve().parent

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("example", help="a JSON object of the task's fields")
parser.add_argument("--url", default="localhost:8001", help="Triton gRPC endpoint")
parser.add_argument("--local", action="store_true", help="run the ONNX models with ONNX Runtime instead")
args = parser.parse_args()
infer = onnxruntime_model_infer(HERE.parents[1] / "models") if args.local else triton_model_infer(args.url)
print(json.dumps(run_deployed(HERE, [json.loads(args.example)], infer), indent=2))
'''

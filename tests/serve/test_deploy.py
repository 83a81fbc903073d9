"""Triton deployment on the CPU: config.pbtxt from the io spec parsed with Triton's own protobuf, the
client-side greedy loop against PyTorch, `deploy --format onnx` end to end, and its refusals."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from hyperexport.contracts import names
from hyperexport.contracts.export import GenerationIds, IoSpec
from hyperexport.contracts.task import TaskFacts
from hyperexport.errors import UserError
from hyperexport.model.trained import load_run
from hyperexport.runtime.backends import OnnxRuntimeBackend
from hyperexport.runtime.generation import greedy_generate
from hyperexport.runtime.predict import predict
from hyperexport.serve.client import deployed_backend, run_deployed
from hyperexport.serve.triton_config import check_model_config, config_text, model_config, triton_dims
from hyperexport.verify.parity import verify

TRITON_TYPES = {"float": "TYPE_FP32", "int64": "TYPE_INT64"}
EXAMPLES = [{"sentence1": "the red fox runs on the hill", "sentence2": "the fox is not red"},
            {"sentence1": "a cat sings", "sentence2": "a cat"}, {"sentence1": "x", "sentence2": "y z"}]


@pytest.fixture(scope="module")
def verified(tiny_rte, tmp_path_factory):
    """The tiny rte export (both heads) with a passing parity report."""
    copy = tiny_rte.copy_to(tmp_path_factory.mktemp("deploy"))
    run, folder = copy.run, copy.export
    assert verify(folder, max_examples=8)["passed"]
    return run, folder


def cli(*args, cwd: Path):
    """The CLI in-process (typer's runner) from `cwd`: `.exit_code`, `.stdout`, `.stderr`."""
    import os

    from typer.testing import CliRunner

    from hyperexport_cli.main import app

    before = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.chdir(before)


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# ---- config.pbtxt ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, platform", [("onnx", "onnxruntime_onnx"), ("tensorrt", "tensorrt_plan")])
def test_configs_are_tritons_message_whose_text_parses_back_and_matches_the_io_spec(verified, fmt, platform):
    spec = IoSpec.read(verified[1]).graphs
    for graph, described in spec.items():
        config = model_config(f"m_{graph}", described, graph, fmt, 16)
        assert isinstance(config, model_config_pb2.ModelConfig)
        assert text_format.Parse(config_text(config), model_config_pb2.ModelConfig()) == config  # as Triton reads it
        assert (config.name, config.platform, config.max_batch_size) == (f"m_{graph}", platform, 16)
        assert config.default_model_filename == {"onnx": "model.onnx", "tensorrt": "model.plan"}[fmt]
        for declared, specs in ((config.input, described.inputs), (config.output, described.outputs)):
            assert [t.name for t in declared] == [s.name for s in specs]
            for tensor, expected in zip(declared, specs):
                assert model_config_pb2.DataType.Name(tensor.data_type) == TRITON_TYPES[expected.dtype]
                assert expected.shape[0] == "batch_size"  # left out of dims: max_batch_size > 0
                assert list(tensor.dims) == [d if isinstance(d, int) else -1 for d in expected.shape[1:]]
        assert config.HasField("dynamic_batching")
        groups = [(g.kind, g.count, list(g.profile)) for g in config.instance_group]
        assert groups == ([(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1, ["0"])] if fmt == "tensorrt" else [])
        assert check_model_config(config, f"m_{graph}", described, graph, fmt, 16) == []


def test_the_config_check_finds_every_difference_from_the_io_spec(verified):
    described = IoSpec.read(verified[1]).graphs["classify_model.onnx"]
    check = lambda config, fmt="onnx": check_model_config(  # noqa: E731
        config, "rte_classify", described, "classify_model.onnx", fmt, 8)
    config = model_config("rte_classify", described, "classify_model.onnx", "onnx", 8)
    assert check(config) == []
    broken = model_config_pb2.ModelConfig()
    broken.CopyFrom(config)
    broken.output[0].dims[:] = [3]
    broken.input[0].data_type = model_config_pb2.TYPE_INT32
    assert check(broken) == [
        "input input_ids is TYPE_INT32, the graph's is int64",
        "output scores has dims [3], the graph's shape is ['batch_size', 2]"]
    other = model_config_pb2.ModelConfig()
    other.CopyFrom(config)
    other.name, other.platform, other.max_batch_size, other.default_model_filename = "x", "tensorrt_plan", 4, "m.onnx"
    other.ClearField("dynamic_batching")
    other.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_CPU)
    other.input[0].name = "ids"
    assert check(other) == [
        "name is 'x', not 'rte_classify'", "platform is 'tensorrt_plan', not 'onnxruntime_onnx'",
        "max_batch_size is 4, not 8", "default_model_filename is 'm.onnx', not 'model.onnx'", "dynamic_batching is off",
        "instance_group is set: ONNX models take Triton's default instances",
        "input names ['ids', 'attention_mask'] differ from the graph's ['input_ids', 'attention_mask']"]
    plan = model_config("rte_classify", described, "classify_model.onnx", "tensorrt", 8)
    assert check(plan, "tensorrt") == []
    plan.instance_group[0].profile[:] = ["1"]
    assert check(plan, "tensorrt") == ["instance_group is not one GPU instance on the plan's profile 0"]


def test_an_element_type_triton_has_no_type_for_is_refused(verified):
    from hyperexport.contracts.export import GraphIo, TensorSpec

    strings = GraphIo(inputs=(TensorSpec("text", "string", ("batch_size",)),), outputs=())
    with pytest.raises(UserError, match="g.onnx input text has element type string, which Triton has no type for"):
        model_config("m", strings, "g.onnx", "onnx", 8)


def test_a_tensor_without_a_leading_batch_axis_is_refused():
    with pytest.raises(UserError, match="has no leading batch_size axis"):
        triton_dims((4, "batch_size"), "g output o")


# ---- the client-side generation loop --------------------------------------------------------------
@pytest.mark.parametrize("eos", [None, "frequent", "frequent, min_new_tokens"])
def test_greedy_loop_over_onnx_graphs_gives_pytorchs_tokens(verified, eos):
    run, folder = verified
    loaded = load_run(run)
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, 300, (6, 10), generator=generator)
    input_ids[:, -1] = 1
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 4:] = 0
    config = loaded.model.backbone.config
    task_ids = torch.full((6,), loaded.model.task_id("rte"))
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=6, do_sample=False, num_beams=1)
    eos_id = config.eos_token_id
    if eos is not None:  # the untrained model never says </s>: call its most common first token the end
        first = loaded.model.generate(task_ids=task_ids, **{**kwargs, "max_new_tokens": 1})[:, 1]
        eos_id = int(torch.mode(first).values)
        assert 0 < int((first == eos_id).sum()) < len(first)  # some rows stop, others go on
        kwargs["eos_token_id"] = eos_id
    minimum = 4 if eos and eos.endswith("min_new_tokens") else 0
    if minimum:
        kwargs["min_new_tokens"] = minimum  # </s> forbidden for the first 4 steps (bench's exact lengths)
    with torch.no_grad():
        expected = loaded.model.generate(task_ids=task_ids, **kwargs).numpy()
    if minimum:  # the rows that said </s> first now go on for at least 4 tokens
        assert expected.shape[1] > 1 + minimum and not (expected[:, 1:1 + minimum] == eos_id).any()
    ids = GenerationIds(config.decoder_start_token_id, eos_id, config.pad_token_id)
    with OnnxRuntimeBackend(folder) as backend:
        tokens = greedy_generate(backend, input_ids.numpy(), attention_mask.numpy(), 6, ids, min_new_tokens=minimum)
    np.testing.assert_array_equal(tokens, expected)


# ---- deploy --format onnx -------------------------------------------------------------------------
def test_deploy_onnx_writes_a_repository_whose_configs_validate_and_whose_models_answer_like_predict(verified,
                                                                                                     tmp_path):
    run, folder = verified
    result = cli("deploy", "--task", "rte", "--format", "onnx", "--export", folder, "--triton-repo", "repo",
                 "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    description = json.loads(result.stdout)
    repo = tmp_path / "repo"
    spec = IoSpec.read(folder).graphs
    assert sorted(p.name for p in (repo / "models").iterdir()) == ["rte_classify", "rte_decoder_with_past",
                                                                   "rte_encoder"]
    for graph, described in spec.items():
        name = f"rte_{graph.removesuffix('_model.onnx')}"
        config = parse(repo / "models" / name / "config.pbtxt")
        assert config == model_config(name, described, graph, "onnx", 32)  # ONNX exports: Triton's batch bound 32
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert [t.name for t in config.input] == [s.name for s in described.inputs]
        assert [t.name for t in config.output] == [s.name for s in described.outputs]
        assert (repo / "models" / name / "1" / "model.onnx").read_bytes() == (folder / graph).read_bytes()
        # the graphs share one weights file: each model folder has it beside model.onnx, hard-linked
        assert os.path.samefile(repo / "models" / name / "1" / names.GRAPH_WEIGHTS_FILE,
                                folder / names.GRAPH_WEIGHTS_FILE)
    client = repo / "clients" / "rte"
    assert {p.name for p in client.iterdir()} == {"tokenizer", "task.json", "deploy.json", "client.py"}
    assert description["head"] == "classify" and description["models"]["encoder"] == "rte_encoder"
    local = deployed_backend(client, local=True)
    assert run_deployed(client, EXAMPLES, local) == predict(folder, EXAMPLES)
    generated = run_deployed(client, EXAMPLES, local, head="generate")
    loaded = load_run(run)
    facts = TaskFacts.read(folder)
    batch = loaded.tokenizer([facts.template.format(**e) for e in EXAMPLES], padding="longest", truncation=True,
                             max_length=facts.max_source_length, return_tensors="pt")
    with torch.no_grad():
        tokens = loaded.model.generate(task_ids=torch.full((3,), loaded.model.task_id("rte")), **batch,
                                       max_new_tokens=facts.max_new_tokens, do_sample=False, num_beams=1)
    decoded = loaded.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    assert [r["label"] for r in generated] == [t.strip() for t in decoded]
    local = subprocess.run([sys.executable, client / "client.py", "--local", json.dumps(EXAMPLES[1])],
                           capture_output=True, text=True, cwd=tmp_path)
    assert local.returncode == 0, local.stderr  # the real script, in its own process
    assert json.loads(local.stdout)[0]["label"] == predict(folder, EXAMPLES[1:2])[0]["label"]


def test_deploy_refuses_existing_models_without_overwrite(verified, tmp_path):
    folder = verified[1]
    args = ("deploy", "--task", "rte", "--format", "onnx", "--export", folder, "--triton-repo", "repo")
    assert cli(*args, cwd=tmp_path).exit_code == 0
    again = cli(*args, cwd=tmp_path)
    assert again.exit_code == 2 and "already exists: pass --overwrite" in again.stderr
    assert cli(*args, "--overwrite", cwd=tmp_path).exit_code == 0
    assert not [p for p in (tmp_path / "repo").iterdir() if p.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("report, message", [
    (None, "has no parity_report.json: run `hyperexport verify"),
    ({"passed": False, "precision": "fp32"}, "failed verify"),
    ({"passed": True, "precision": "int8"}, "is for precision int8"),
])
def test_deploy_refuses_an_export_without_a_passed_parity_report(verified, tmp_path, report, message):
    copy = tmp_path / "export"
    shutil.copytree(verified[1], copy)
    (copy / names.PARITY_REPORT_FILE).unlink()
    if report is not None:
        (copy / names.PARITY_REPORT_FILE).write_text(json.dumps(report))
    result = cli("deploy", "--task", "rte", "--format", "onnx", "--export", copy, "--triton-repo", "repo", cwd=tmp_path)
    assert result.exit_code == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "repo").exists()


def test_deploy_refuses_another_format_or_task_and_a_missing_export(verified, tmp_path):
    folder = verified[1]
    wrong = cli("deploy", "--task", "rte", "--format", "tensorrt", "--export", folder, cwd=tmp_path)
    assert wrong.exit_code == 2 and "is an ONNX export of rte, not a TensorRT engine folder of rte" in wrong.stderr
    missing = cli("deploy", "--task", "rte", cwd=tmp_path)
    assert missing.exit_code == 2 and "no export at exports/rte/tensorrt" in missing.stderr
    assert not (tmp_path / "triton-repo").exists()


def test_the_deployed_client_without_a_server_is_one_line_and_exit_2(verified, tmp_path):
    assert cli("deploy", "--task", "rte", "--format", "onnx", "--export", verified[1], "--triton-repo", "repo",
               cwd=tmp_path).exit_code == 0
    with socket.socket() as probe:  # a local port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = subprocess.run([sys.executable, tmp_path / "repo" / "clients" / "rte" / "client.py",
                             "--url", f"127.0.0.1:{port}", json.dumps(EXAMPLES[0])],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: Triton at 127.0.0.1:{port} could not run rte_classify: ")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

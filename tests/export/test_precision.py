"""fp16 and bf16 exports: the dtype map, the fp32 islands that keep fp16 finite, and their verification."""

from __future__ import annotations

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_t5
from hyperexport.contracts.names import ENCODER_GRAPH, IO_SPEC_FILE
from hyperexport.export.onnx import export_onnx
from hyperexport.export.precision import cast_to_precision
from hyperexport.fold import AdaptedFeedForward, load_folded_task
from hyperexport.verify.parity import TOLERANCES, verify
from hyperexport_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tiny_rte, tmp_path_factory):
    copy = tiny_rte.copy_to(tmp_path_factory.mktemp("precision"))
    return copy.run, copy.export


@torch.no_grad()
def precision_drift(reference: torch.nn.Module, cast: torch.nn.Module, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor,
                    decoder_input_ids: torch.Tensor) -> dict:
    """Teacher-forced logits of `cast` against the fp32 `reference` on the same inputs (PyTorch, CPU)."""
    expected = reference(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    actual = cast(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids).logits
    delta = (actual.float() - expected).abs()
    return {"max_abs_diff_logits": float(delta.max()), "mean_abs_diff_logits": float(delta.mean()),
            "max_abs_logit": float(expected.abs().max()), "finite": bool(torch.isfinite(actual).all()),
            "argmax_agreement": float((actual.argmax(-1) == expected.argmax(-1)).float().mean())}


def _inputs() -> dict:
    generator = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, 300, (3, 10), generator=generator)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                decoder_input_ids=torch.randint(3, 300, (3, 4), generator=generator))


def test_fp16_keeps_wo_and_the_feed_forward_adapter_in_fp32(exported):
    run, _ = exported
    model = cast_to_precision(load_folded_task(run / "tasks" / "rte")[0], "fp16")
    fp32 = {name for name, p in model.named_parameters() if p.dtype == torch.float32}
    assert fp32 and all(".wo." in name or ".adapter." in name for name in fp32)
    feed_forwards = [m for m in model.modules() if isinstance(m, AdaptedFeedForward)]
    assert all(p.dtype == torch.float32 for m in feed_forwards for p in m.adapter.parameters())
    attention_adapters = [n for n, p in model.named_parameters() if "SelfAttention.adapter" in n]
    parameters = dict(model.named_parameters())
    assert attention_adapters and all(parameters[n].dtype == torch.float16 for n in attention_adapters)


def test_fp16_islands_survive_a_feed_forward_that_overflows_fp16():
    """Scale wo so the feed-forward's output passes fp16's 65504: under plain .half() it overflows
    (T5's fp16 inf-clamp then cuts it, and predictions change); the precision map stays close to fp32."""
    reference = tiny_t5()
    with torch.no_grad():
        for block in reference.encoder.block:
            block.layer[-1].DenseReluDense.wo.weight.mul_(3e4)
    reference.lm_head.weight.data.mul_(1e-3)  # keep logits readable after the large residual stream
    plain = tiny_t5()
    plain.load_state_dict(reference.state_dict())
    islands = tiny_t5()
    islands.load_state_dict(reference.state_dict())
    overflowing = precision_drift(reference, plain.half(), **_inputs())
    kept = precision_drift(reference, cast_to_precision(islands, "fp16"), **_inputs())
    assert kept["finite"] and kept["argmax_agreement"] == 1.0
    assert not overflowing["finite"] or overflowing["argmax_agreement"] < 1.0
    assert kept["max_abs_diff_logits"] * 100 < overflowing["max_abs_diff_logits"]


def test_fp16_export_runs_on_onnx_runtime_cpu_and_verifies(exported, tmp_path):
    run, _ = exported
    folder = export_onnx(run, task="rte", head="both", output=tmp_path / "fp16", precision="fp16")
    spec = json.loads((folder / IO_SPEC_FILE).read_text())
    assert {o["dtype"] for o in spec[ENCODER_GRAPH]["outputs"]} == {"float16"}
    assert {o["dtype"] for o in spec["classify_model.onnx"]["outputs"]} == {"float"}  # scores in fp32
    initializers = onnx.load(str(folder / ENCODER_GRAPH)).graph.initializer
    dtypes = {onnx.TensorProto.DataType.Name(i.data_type) for i in initializers if len(i.dims) == 2}
    assert dtypes == {"FLOAT16", "FLOAT"}  # fp16 weights with fp32 islands (wo, feed-forward adapters)
    report = verify(folder)
    assert report["passed"] and not report["not_run"]
    runners = {c["runner"] for c in report["comparisons"]}
    assert runners == {"torch_folded", "torch_folded_fp16", "onnxruntime"}
    low = [c for c in report["comparisons"] if c["runner"] != "torch_folded" and c["output"] == "logits"]
    assert all(c["tolerance"] == TOLERANCES["fp16"]["logits"] for c in low)
    assert any(c["max_abs_diff"] > TOLERANCES["fp32"]["logits"] for c in low)  # really fp16


def test_bf16_export_keeps_the_fp32_interface_and_is_not_claimed_verified_on_cpu(exported, tmp_path):
    run, fp32_folder = exported
    folder = export_onnx(run, task="rte", head="both", output=tmp_path / "bf16", precision="bf16")
    fp32_spec = json.loads((fp32_folder / IO_SPEC_FILE).read_text())
    bf16_spec = json.loads((folder / IO_SPEC_FILE).read_text())
    for graph, sides in fp32_spec.items():  # same names and axes; only float dtypes differ
        for side, values in sides.items():
            for expected, actual in zip(values, bf16_spec[graph][side], strict=True):
                assert (actual["name"], actual["shape"]) == (expected["name"], expected["shape"])
                assert actual["dtype"] == ("bfloat16" if expected["dtype"] == "float" and graph != "classify_model.onnx"
                                           else expected["dtype"])
    report = verify(folder)
    assert not report["passed"] and [r["runner"] for r in report["not_run"]] == ["onnxruntime"]
    torch_rows = [c for c in report["comparisons"] if c["runner"] == "torch_folded_bf16"]
    assert torch_rows and all(c["passed"] for c in torch_rows)  # the PyTorch view of bf16 is within bounds
    result = runner.invoke(app, ["verify", str(folder)])
    assert result.exit_code == 1 and "not run: onnxruntime" in result.stdout
    assert "parity not run here (the export's runtime needs a GPU)" in result.stdout and "FAILED" not in result.stdout
    refused = runner.invoke(app, ["predict", str(folder), "some premise"])
    assert refused.exit_code == 2 and "bf16 graphs, which ONNX Runtime runs only on a GPU" in refused.stderr


"""`verify`: parity of every runner with the hypernetwork model, the report, and its failures."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from conftest import reseal
from hyperexport.contracts import manifest as sealing
from hyperexport.contracts import names
from hyperexport.export.onnx import export_onnx
from hyperexport.verify.parity import verify
from hyperexport_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tiny_rte, tmp_path_factory):
    copy = tiny_rte.copy_to(tmp_path_factory.mktemp("verify"))  # verify writes its report into the export
    return copy.run, copy.export


def test_verify_passes_and_writes_the_report(exported):
    run, folder = exported
    report = verify(folder)
    assert report["passed"] and report["run"] == str(run)
    assert json.loads((folder / names.PARITY_REPORT_FILE).read_text()) == report
    seen = {(c["inputs"], c["runner"], c["output"]) for c in report["comparisons"]}
    for inputs in ("evaluation", "random"):
        for runner_name in ("torch_folded", "onnxruntime"):
            assert {(inputs, runner_name, o) for o in ("logits", "scores", "tokens")} <= seen
    assert all(c["max_abs_diff"] <= c["tolerance"] for c in report["comparisons"])
    assert {m["head"] for m in report["metrics"]} == {"classify", "generate"}
    sealing.unseal(folder, "export")  # the report does not count as tampering


def test_verify_cli_exit_codes(exported, tmp_path):
    run, folder = exported
    ok = runner.invoke(app, ["verify", str(folder)])
    assert ok.exit_code == 0 and "parity passed" in ok.stdout

    drifted = tmp_path / "drifted"  # the run changed after the export: the export no longer matches it
    shutil.copytree(run, drifted)
    tensors = load_file(drifted / names.WEIGHTS_FILE)
    tensors["generators.encoder.ln_bias.bias"] += 0.5
    save_file(tensors, drifted / names.WEIGHTS_FILE)
    reseal(drifted)  # a consistent run, just not the one the export came from
    failed = runner.invoke(app, ["verify", str(folder), "--run", str(drifted), "--json"])
    assert failed.exit_code == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert not report["passed"]
    assert any(not c["passed"] and c["runner"] == "onnxruntime" and c["output"] == "logits"
               for c in report["comparisons"])


def test_verify_refuses_a_tampered_or_missing_export(exported, tmp_path):
    _, folder = exported
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "task.json").write_text("{}")
    tampered = runner.invoke(app, ["verify", str(copy)])
    assert tampered.exit_code == 2 and "task.json was changed (sha256 mismatch)" in tampered.stderr
    missing = runner.invoke(app, ["verify", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no export at" in missing.stderr and "hyperexport export" in missing.stderr


def test_int8_export_verifies_within_its_stated_bounds(exported, tmp_path):
    from hyperexport.verify.parity import TOLERANCES

    run, _ = exported
    folder = export_onnx(run, task="rte", head="both", output=tmp_path / "int8", precision="int8")
    report = verify(folder)
    assert report["precision"] == "int8" and report["passed"]
    onnx_rows = [c for c in report["comparisons"] if c["runner"] == "onnxruntime"]
    assert all(c["tolerance"] == TOLERANCES["int8"][c["output"]] for c in onnx_rows)
    # really quantized
    assert any(c["max_abs_diff"] > TOLERANCES["fp32"]["logits"] for c in onnx_rows if c["output"] == "logits")
    folded_rows = [c for c in report["comparisons"] if c["runner"] == "torch_folded"]
    fp32 = TOLERANCES["fp32"]  # the folded model is fp32: its bound, grown by at most 1e-5 x the tiny model's values
    assert all(fp32[c["output"]] <= c["tolerance"] <= fp32[c["output"]] + fp32["relative"] * 100 for c in folded_rows)
    assert all(c["tolerance"] == 0 for c in folded_rows if c["output"] == "tokens")


def test_verify_refuses_a_folder_that_is_not_an_export(exported):
    run, _ = exported
    result = runner.invoke(app, ["verify", str(run)])
    assert result.exit_code == 2 and "is not an export folder" in result.stderr


def test_verify_accepts_an_export_whose_manifest_predates_a_backbone_field(exported, tmp_path):
    """A backbone field added later (its default applies) is no reason to call the run another backbone."""
    run, folder = exported
    older = tmp_path / "older"
    shutil.copytree(folder, older)
    manifest = json.loads((older / names.MANIFEST_FILE).read_text())
    del manifest["backbone"]["legacy_cross_attention_bias"]
    (older / names.MANIFEST_FILE).write_text(json.dumps(manifest))
    assert verify(older, run=run)["passed"]  # a copy elsewhere: its relative source_run points nowhere

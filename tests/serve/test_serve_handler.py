"""The served models without a server: `serve.handler.ServedModel` in-process (what each Python-backend
process runs), the config.pbtxt of every interface parsed back with Triton's protobuf, the task table."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from conftest import SHORT_RTE_EXAMPLES, reseal, verified_tiny_export
from hyperexport.contracts.export import ExportFolder
from hyperexport.errors import UserError
from hyperexport.runtime.exports import export_backend
from hyperexport.runtime.generation import greedy_generate
from hyperexport.runtime.heads import label_examples
from hyperexport.runtime.predict import predict
from hyperexport.serve.handler import RequestError, ServedModel
from hyperexport.serve.interfaces import INTERFACES, TASK_INPUT, TEXT_INPUT
from hyperexport.serve.tasks import ServedTasks, UnknownTask
from hyperexport.serve.triton_config import config_text, python_model_config


@pytest.fixture(scope="module")
def export(tiny_rte, tmp_path_factory):
    return verified_tiny_export(tiny_rte, tmp_path_factory.mktemp("handler"))


def texts(*values: str | bytes) -> dict[str, np.ndarray]:
    return {TEXT_INPUT: np.array([[v if isinstance(v, bytes) else v.encode()] for v in values], dtype=np.object_)}


GOOD = json.dumps(SHORT_RTE_EXAMPLES[0])
BAD_TEXT = [  # (request, what the error says)
    (texts(b"\xff\xfe"), "text_input is not UTF-8 (invalid start byte at byte 0): send UTF-8 text"),
    (texts("   "), "text_input is empty: pass the example's text, or a JSON object of its fields"),
    (texts('{"sentence1": "a",'), "text_input is not JSON"),
    (texts('{"sentence1": "a"}'), "text_input lacks field sentence2: task rte needs fields sentence1, sentence2"),
    (texts("a plain sentence"), "task rte needs fields sentence1, sentence2: pass a JSON object"),
    (texts(GOOD, '{"sentence1": null, "sentence2": "b"}'),
     "text_input row 1: field sentence1 is null; give it as a string"),
    (texts(json.dumps({"sentence1": "a " * 40, "sentence2": "b"})),
     "text_input has 105 tokens; rte_classify takes at most 64 (the task's max_source_length): shorten the text"),
    (texts(b"x" * 70000), "text_input is 70000 bytes; rte_classify takes at most 65536 bytes of text per row"),
    ({**texts(GOOD), TASK_INPUT: np.array([[b"cola"]], dtype=np.object_)},
     "unknown task 'cola': rte_classify serves rte"),
]


def test_every_bad_text_request_is_one_line_and_the_good_ones_of_its_batch_still_run(export):
    with ServedModel(export, "classify", "rte_classify") as model:
        results = model.run([texts(GOOD)] + [request for request, _ in BAD_TEXT] + [texts(GOOD)])
    assert isinstance(results[0], dict) and isinstance(results[-1], dict)
    assert results[0][("label")].tolist() == results[-1]["label"].tolist()
    for result, (_, message) in zip(results[1:-1], BAD_TEXT):
        assert isinstance(result, RequestError) and not result.internal
        assert message in str(result) and "\n" not in str(result)


@pytest.mark.parametrize("request_, message", [
    ({"input_ids": np.array([[5, 1000]]), "attention_mask": np.array([[1, 1]])},
     "input_ids holds 1000, outside the tokenizer's 384 token ids (0 to 383)"),
    ({"input_ids": np.zeros((1, 0), np.int64), "attention_mask": np.zeros((1, 0), np.int64)},
     "input_ids is empty (shape [1, 0]): send at least one token id"),
    ({"input_ids": np.ones((1, 65), np.int64), "attention_mask": np.ones((1, 65), np.int64)},
     "input_ids has 65 tokens per row; rte_classify_ids takes at most 64 (the task's max_source_length)"),
    ({"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.ones((1, 2), np.int64)},
     "attention_mask is shape [1, 2], input_ids has shape [1, 3]: send one mask value per token"),
    ({"input_ids": np.ones((1, 3), np.int64), "attention_mask": np.array([[1, 2, 0]])},
     "attention_mask must be 1 for tokens and 0 for padding, with a 1 in every row"),
], ids=["out-of-vocabulary", "empty", "too-long", "mask-shape", "mask-values"])
def test_bad_token_id_requests_are_one_line(export, request_, message):
    with ServedModel(export, "classify_ids", "rte_classify_ids") as model:
        [result] = model.run([request_])
    assert isinstance(result, RequestError) and message in str(result)


def test_served_answers_are_predicts_answers(export):
    """classify and generate by text, and both by token ids, against predict and the local runtime."""
    expected = predict(export, SHORT_RTE_EXAMPLES)
    with ServedModel(export, "classify", "rte_classify") as model:
        [batch] = model.run([texts(*(json.dumps(example) for example in SHORT_RTE_EXAMPLES))])
    assert [label.decode() for label in batch["label"].reshape(-1)] == [row["label"] for row in expected]
    np.testing.assert_allclose(batch["scores"], [list(row["scores"].values()) for row in expected], atol=1e-5)
    np.testing.assert_allclose(batch["probabilities"], [list(r["probabilities"].values()) for r in expected], atol=1e-5)

    folder = ExportFolder.open(export)
    from hyperexport.serve.handler import export_tokenizer

    tokenizer = export_tokenizer(folder)
    sources = [folder.facts.template.format(**example) for example in SHORT_RTE_EXAMPLES]
    with export_backend(folder) as backend:
        generated = label_examples(backend, tokenizer, folder.facts, sources, folder.generation_ids, "generate")
        encoded = tokenizer(sources, padding="longest", return_tensors="np")
        tokens = greedy_generate(backend, encoded["input_ids"], encoded["attention_mask"],
                                 folder.facts.max_new_tokens, folder.generation_ids)
    ids = {"input_ids": encoded["input_ids"].astype(np.int64),
           "attention_mask": encoded["attention_mask"].astype(np.int64)}
    with ServedModel(export, "generate", "rte_generate") as model:
        requests = [texts(json.dumps(example)) for example in SHORT_RTE_EXAMPLES]  # one row each, batched here
        assert [r["text_output"][0, 0].decode() for r in model.run(requests)] == [row["label"] for row in generated]
    with ServedModel(export, "generate_ids", "rte_generate_ids") as model:
        [served] = model.run([ids])
    assert served["tokens"].shape[1] <= tokens.shape[1]
    np.testing.assert_array_equal(served["tokens"], tokens[:, :served["tokens"].shape[1]])
    with ServedModel(export, "classify_ids", "rte_classify_ids") as model:
        [scores] = model.run([ids])
    np.testing.assert_allclose(scores["scores"], batch["scores"], atol=1e-5)


def test_a_runtime_failure_fails_its_batch_as_a_server_error_and_the_model_goes_on(export, monkeypatch):
    with ServedModel(export, "classify", "rte_classify") as model:
        infer = model.backend.infer
        monkeypatch.setattr(model.backend, "infer", lambda graph, feeds: 1 / 0)
        failed = model.run([texts(GOOD), texts("")])
        monkeypatch.setattr(model.backend, "infer", infer)
        [answer] = model.run([texts(GOOD)])
    assert failed[0].internal and str(failed[0]) == "rte_classify failed: division by zero"
    assert not failed[1].internal  # the bad request keeps its own answer
    assert answer["label"].shape == (1, 1)


@pytest.mark.parametrize("interface", sorted(INTERFACES))
def test_each_interface_is_a_python_backend_config_triton_can_parse(interface):
    spec = INTERFACES[interface]
    text = config_text(python_model_config(f"rte_{interface}", spec, 32, 500, 2, {"export": "/x",
                                                                                  "interface": interface}))
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == (f"rte_{interface}", "python", 32)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)]
    declared = [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims), t.optional, t.allow_ragged_batch)
                for t in config.input]
    assert declared == [(t.name, t.data_type, list(t.dims), t.optional, t.ragged) for t in spec.inputs]
    assert [t.name for t in config.output] == [t.name for t in spec.outputs]
    assert config.parameters["export"].string_value == "/x"


def test_a_single_task_export_takes_its_own_task_or_none(export):
    table = ServedTasks.of(ExportFolder.open(export))
    assert (table.index(None, "m"), table.index("rte", "m"), table.feeds([0, 0])) == (0, 0, {})
    assert table.labels_json() == {"rte": ["0", "1"]}
    with pytest.raises(UnknownTask, match="unknown task 'sst2': m serves rte"):
        table.index("sst2", "m")


def test_a_tokenizer_that_asks_for_its_own_code_is_refused_without_running_it(export, tmp_path):
    """An export (resealed, so its manifest checks out) whose tokenizer names a Python file of its own."""
    copy, marker = tmp_path / "export", tmp_path / "code-ran"
    shutil.copytree(export, copy)
    config = copy / "tokenizer" / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings.update(tokenizer_class="ByT5Custom", auto_map={"AutoTokenizer": ["custom.ByT5Custom", None]})
    config.write_text(json.dumps(settings))
    (copy / "tokenizer" / "custom.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                                   "from transformers import ByT5Tokenizer as ByT5Custom\n")
    reseal(copy)
    with pytest.raises(UserError, match="cannot load the tokenizer of"):
        ServedModel(copy, "classify", "rte_classify")
    assert not marker.exists()

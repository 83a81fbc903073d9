"""`hyperexport serve` for real: one tritonserver (nvidia-pytriton's) per module on free local ports,
real requests over HTTP (through serve's guard), gRPC and curl; malformed requests and a client that
goes away mid-request, each followed by a good request that gets the same answer as before."""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from conftest import SHORT_RTE_EXAMPLES, tree_digest, verified_tiny_export
from hyperexport.bench.serving import ServeProcess, batch_sizes
from hyperexport.runtime.predict import predict
from hyperexport.serve.remote import predict_remote
from hyperexport_cli.main import app

README = Path(__file__).parents[2] / "README.md"
GOOD = json.dumps(SHORT_RTE_EXAMPLES[0])
runner = CliRunner()


@pytest.fixture(scope="module")
def export(tiny_rte, tmp_path_factory):
    return verified_tiny_export(tiny_rte, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def server(export):
    before = tree_digest(export)
    with ServeProcess([export]) as running:
        yield running
        code, out, err = running.stop()
    assert code == 0 and "stopped (SIGTERM): in-flight requests finished" in out, err
    assert tree_digest(export) == before  # the export is only read


def http_infer(server, model: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.endpoints.http}/v2/models/{model}/infer", data=data,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def text_request(*texts: object, datatype: str = "BYTES", shape: list[int] | None = None, **extra) -> dict:
    inputs = [{"name": "text_input", "shape": shape or [len(texts), 1], "datatype": datatype, "data": list(texts)}]
    inputs += [{"name": name, "shape": [1, 1], "datatype": "BYTES", "data": [value]} for name, value in extra.items()]
    return {"inputs": inputs}


@pytest.fixture(scope="module")
def baseline(server):
    status, answer = http_infer(server, "rte_classify", text_request(GOOD))
    assert status == 200
    return answer["outputs"]


def test_the_server_is_ready_binds_the_loopback_and_reports_its_batches(server, baseline):
    with urllib.request.urlopen(server.endpoints.ready_url) as answer:
        assert answer.status == 200  # Triton's own readiness, through the guard
    with urllib.request.urlopen(server.endpoints.metrics_url) as answer:
        assert "nv_inference_request_success" in answer.read().decode()
    listening = _listening_addresses({server.endpoints.http_port, server.endpoints.grpc_port,
                                      server.endpoints.metrics_port})
    assert listening and listening <= {"127.0.0.1"}, listening
    assert sum(batch_sizes(server.endpoints, "rte_classify").values()) >= 1


def _listening_addresses(ports: set[int]) -> set[str]:
    """The local addresses of listening TCP sockets on `ports` (/proc/net/tcp and tcp6), IPv4-mapped ones as IPv4."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.rsplit(":", 1)
            if state == "0A" and int(port, 16) in ports:
                raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, len(address), 8))
                ip = ipaddress.ip_address(raw)
                found.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return found


@pytest.mark.parametrize("scheme", ["", "http://"])
def test_predict_with_url_prints_what_predict_prints(server, export, tmp_path, scheme):
    examples = tmp_path / "in.jsonl"
    examples.write_text("".join(json.dumps(example) + "\n" for example in SHORT_RTE_EXAMPLES))
    address = server.endpoints.http if scheme else server.endpoints.grpc
    remote = runner.invoke(app, ["predict", "rte", "--url", scheme + address, "--input", str(examples), "--json"])
    local = runner.invoke(app, ["predict", str(export), "--input", str(examples), "--json"])
    assert remote.exit_code == 0 and local.exit_code == 0, remote.output
    served, expected = json.loads(remote.stdout), json.loads(local.stdout)
    assert [{key: row[key] for key in ("index", "label", "label_name")} for row in served] == \
        [{key: row[key] for key in ("index", "label", "label_name")} for row in expected]
    assert [set(row) for row in served] == [set(row) for row in expected]  # the same fields
    for got, want in zip(served, expected):
        np.testing.assert_allclose(list(got["scores"].values()), list(want["scores"].values()), atol=1e-5)
        np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()), atol=1e-5)


def test_predict_with_url_refuses_in_one_line(server):
    missing = runner.invoke(app, ["predict", "rte", "--url", server.endpoints.grpc, '{"sentence1": "a"}'])
    assert missing.exit_code == 2
    assert missing.stderr.strip() == ("error: example 0: text_input lacks field sentence2: task rte needs fields "
                                      "sentence1, sentence2")
    unknown = runner.invoke(app, ["predict", "cola", "--url", "http://" + server.endpoints.http, GOOD])
    assert "serves no cola_classify or cola_generate: serve the export as cola" in unknown.stderr
    with pytest.raises(Exception, match="no server answers at 127.0.0.1:1"):
        predict_remote("127.0.0.1:1", "rte", text=GOOD)


def test_the_readme_curl_line_runs(server, baseline):
    """The README's curl line against this server: with curl when it is installed (it is on our machines),
    else the same request through urllib."""
    line = next(line for line in README.read_text().splitlines() if line.startswith("curl -s localhost:8000/v2/"))
    args = shlex.split(line.replace("localhost:8000", server.endpoints.http))
    if shutil.which("curl"):
        answer = json.loads(subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout)
    else:
        url, body = args[2], args[args.index("-d") + 1].encode()
        answer = http_infer(server, url.rsplit("/", 2)[-2], body)[1]
    assert {output["name"] for output in answer["outputs"]} == {"label", "scores", "probabilities"}


def test_generate_and_token_id_models_answer_like_the_local_runtime(server, export):
    expected = predict(export, SHORT_RTE_EXAMPLES[:2])
    status, answer = http_infer(server, "rte_generate", text_request(*map(json.dumps, SHORT_RTE_EXAMPLES[:2])))
    assert status == 200 and len(answer["outputs"][0]["data"]) == 2
    generate = urllib.request.Request(f"http://{server.endpoints.http}/v2/models/rte_generate/generate",
                                      data=json.dumps({"text_input": GOOD}).encode(), method="POST")
    with urllib.request.urlopen(generate) as reply:  # Triton's generate extension, on the same model
        assert json.load(reply)["text_output"] == answer["outputs"][0]["data"][0]
    with grpcclient.InferenceServerClient(server.endpoints.grpc) as client:
        ids = np.array([[115, 101, 110, 1]], dtype=np.int64)
        inputs = [grpcclient.InferInput(name, [1, 4], "INT64") for name in ("input_ids", "attention_mask")]
        inputs[0].set_data_from_numpy(ids)
        inputs[1].set_data_from_numpy(np.ones_like(ids))
        assert client.infer("rte_classify_ids", inputs).as_numpy("scores").shape == (1, 2)
        assert client.infer("rte_generate_ids", inputs).as_numpy("tokens")[0, 0] == 0  # the decoder start
    assert expected[0]["label"] in ("0", "1")


TOO_LONG = json.dumps({"sentence1": "a " * 40, "sentence2": "b"})
MALFORMED = [  # (id, model, request body, HTTP status, what the answer says)
    ("wrong-dtype", "rte_classify", text_request(1.0, datatype="FP32"), 400,
     "inference input 'text_input' data-type is 'FP32', but model 'rte_classify' expects 'BYTES'"),
    ("wrong-shape", "rte_classify", text_request("a", "b", shape=[1, 2]), 400,
     "unexpected shape for input 'text_input' for model 'rte_classify'. Expected [-1,1], got [1,2]"),
    ("empty-text", "rte_classify", text_request(""), 400,
     "text_input is empty: pass the example's text, or a JSON object of its fields"),
    ("too-long", "rte_classify", text_request(TOO_LONG), 400,
     "text_input has 105 tokens; rte_classify takes at most 64 (the task's max_source_length): shorten the text"),
    ("unknown-task", "rte_classify", text_request(GOOD, task="cola"), 400,
     "unknown task 'cola': rte_classify serves rte"),
    ("not-json", "rte_classify", b'{"inputs": [', 500, "failed to parse the request JSON buffer"),  # Triton's 500
    ("ten-megabytes", "rte_classify", json.dumps(text_request("a" * 10 * 2**20)).encode(), 413,
     "request body is 10485848 bytes; this server takes at most 2097152 bytes per request: send fewer or shorter rows "
     "per request"),
    ("ids-out-of-vocabulary", "rte_classify_ids",
     {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [5, 1000]},
                 {"name": "attention_mask", "shape": [1, 2], "datatype": "INT64", "data": [1, 1]}]}, 400,
     "input_ids holds 1000, outside the tokenizer's 384 token ids (0 to 383)"),
]


@pytest.mark.parametrize("model, body, status, message", [case[1:] for case in MALFORMED],
                         ids=[c[0] for c in MALFORMED])
def test_a_malformed_request_is_answered_with_what_is_wrong(server, baseline, model, body, status, message):
    got_status, answer = http_infer(server, model, body)
    assert (got_status, message in answer["error"]) == (status, True), answer
    assert http_infer(server, "rte_classify", text_request(GOOD)) == (200, {**_envelope(), "outputs": baseline})


def _envelope() -> dict:
    return {"model_name": "rte_classify", "model_version": "1"}


def test_bytes_that_are_not_utf8_over_grpc_get_an_error_and_the_server_goes_on(server, baseline):
    with grpcclient.InferenceServerClient(server.endpoints.grpc) as client:
        text = grpcclient.InferInput("text_input", [1, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"\xff\xfe not text"]], dtype=np.object_))
        with pytest.raises(grpcclient.InferenceServerException) as refused:
            client.infer("rte_classify", [text])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "text_input is not UTF-8 (invalid start byte at byte 0): send UTF-8 text" in refused.value.message()
    assert http_infer(server, "rte_classify", text_request(GOOD))[1]["outputs"] == baseline


@pytest.mark.parametrize("when", ["mid-body", "before-the-answer"])
def test_a_client_that_disconnects_mid_request_leaves_the_server_answering(server, baseline, when):
    body = json.dumps(text_request(*[GOOD] * 32)).encode()
    head = (f"POST /v2/models/rte_generate/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(5):
        with socket.create_connection((server.endpoints.client_host, server.endpoints.http_port)) as sock:
            sock.sendall(head + (body[: len(body) // 2] if when == "mid-body" else body))
    assert http_infer(server, "rte_classify", text_request(GOOD))[1]["outputs"] == baseline


def test_a_second_server_on_a_port_in_use_is_refused_in_one_line(server, export):
    taken = runner.invoke(app, ["serve", str(export), "--http-port", str(server.endpoints.http_port)])
    assert taken.exit_code == 2
    assert taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{server.endpoints.http_port} (Address already "
                                   "in use): choose another --http-port, or stop what uses it")

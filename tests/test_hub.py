"""The hub is never waited on: an id not in the local cache, with the hub switched off (HF_HUB_OFFLINE)
or unreachable, is one line naming what was wanted and the offline way."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from hyperexport import hub
from hyperexport.errors import UserError
from hyperexport.model.build import load_tokenizer
from hyperexport_cli.main import app

HUB_RECIPE = """name: from-hub
tasks:
  - name: rte
backbone:
  config: t5-test
  tokenizer: byt5
train:
  max_steps: 1
"""


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-home" / "hub"))
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_hf_hub_offline_is_a_one_line_error_naming_the_offline_way(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub.hub_reachable()
    with pytest.raises(UserError) as caught:
        load_tokenizer("t5-small")
    assert str(caught.value) == ("cannot load tokenizer 't5-small': HF_HUB_OFFLINE is set, and it is not cached: set "
                                 "backbone.tokenizer to a local folder (save_pretrained), or to byt5 or demo-words, "
                                 "which need no files")


def test_an_unreachable_endpoint_is_found_by_one_connect_and_a_listening_one_is_not(empty_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert not hub.hub_reachable()
    with pytest.raises(UserError, match=r"the Hugging Face Hub \(http://127.0.0.1:\d+\) is unreachable"):
        load_tokenizer("some-org/some-tokenizer")
    hub.hub_reachable.cache_clear()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable()


def test_train_on_a_hub_dataset_offline_is_one_line_exit_2_and_leaves_nothing(empty_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(HUB_RECIPE)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["train", "r.yaml"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (
        "error: cannot load dataset 'nyu-mll/glue': HF_HUB_OFFLINE is set, and it is not cached: give task rte local "
        "data: source glue_dir with path the GLUE root folder (the one holding RTE/, SST-2/, ...), or source jsonl "
        "with a folder of train/validation/test.jsonl (docs/data.md)")
    assert sorted(p.name for p in tmp_path.iterdir()) == before

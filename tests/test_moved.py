"""Manifests hold paths relative to their folder: a run and its exports moved together (another folder,
another name) still verify and predict, and nothing in the moved tree names the old place."""

from __future__ import annotations

import shutil

from conftest import TinyTree
from hyperexport.runtime.predict import predict
from hyperexport.verify.parity import verify

EXAMPLES = [{"sentence1": "the red fox runs", "sentence2": "the fox is not red"}]


def test_a_moved_run_and_its_export_still_verify_and_predict(tiny_rte: TinyTree, tmp_path):
    copy = tiny_rte.copy_to(tmp_path / "before")  # a copy is already a move: the session's tree is elsewhere
    run, export = copy.run, copy.export
    expected = predict(export, EXAMPLES)
    moved = tmp_path / "after" / "elsewhere"
    shutil.move(tmp_path / "before", moved)
    assert not (tmp_path / "before").exists()
    new_export = moved / export.relative_to(tmp_path / "before")
    report = verify(new_export, max_examples=20)
    assert report["passed"] and report["run"] == str(moved / run.relative_to(tmp_path / "before"))
    assert predict(new_export, EXAMPLES) == expected
    manifests = [p.read_text() for p in moved.rglob("manifest.json")]
    assert len(manifests) == 3 and not any(str(tmp_path / "before") in text for text in manifests)
    assert not any(str(tiny_rte.root) in text for text in manifests)  # nor the place the tree was built in

"""A recipe's tasks become examples: registry tasks from a GLUE folder, custom tasks from JSONL."""

from __future__ import annotations

import json

from hyperexport.recipe.load import recipe_from_dict
from hyperexport.training.task_data import load_task_data


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_custom_jsonl_task_uses_the_recipes_template_labels_and_metric(tmp_path):
    for split, n in (("train", 6), ("validation", 4), ("test", 2)):
        write_jsonl(tmp_path / f"{split}.jsonl",
                    [{"question": f"q{i}", "answer": f"a{i}", "label": "yes" if i % 2 else "no"} for i in range(n)])
    recipe = recipe_from_dict({
        "name": "custom",
        "tasks": [{"name": "qa-check", "source": "jsonl", "path": str(tmp_path),
                   "template": "question: {question} answer: {answer}", "labels": ["no", "yes"],
                   "metric": "accuracy"}],
    })
    data = load_task_data(recipe)["qa-check"]
    assert (len(data.train), len(data.validation), len(data.test)) == (6, 4, 2)
    assert data.train[1].source == "question: q1 answer: a1" and data.train[1].target == "yes"
    assert data.spec.metrics == ("accuracy",) and data.spec.labels == ("no", "yes")


def test_glue_folder_task_follows_the_small_task_split_protocol(tmp_path):
    rte = tmp_path / "RTE"
    rte.mkdir()
    header = "index\tsentence1\tsentence2\tlabel\n"
    def rows(n):
        return "".join(f"{i}\tpremise {i}\thypothesis {i}\t{'entailment' if i % 2 else 'not_entailment'}\n"
                       for i in range(n))
    (rte / "train.tsv").write_text(header + rows(10))
    (rte / "dev.tsv").write_text(header + rows(8))
    recipe = recipe_from_dict({"name": "g", "tasks": [{"name": "rte", "source": "glue_dir", "path": str(tmp_path)}]})
    data = load_task_data(recipe)["rte"]
    assert (len(data.train), len(data.validation), len(data.test)) == (10, 4, 4)
    assert {e.source for e in data.validation}.isdisjoint({e.source for e in data.test})
    assert data.train[1].source == "sentence1: premise 1 sentence2: hypothesis 1" and data.train[1].target == "0"

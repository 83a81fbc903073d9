import json

import pytest

from hyperexport.data.sources import load_raw_examples
from hyperexport.errors import UserError
from hyperexport.tasks.registry import custom_task, get_task

# task -> (folder, file, header or None, one data row, expected example)
GLUE_ROWS = {
    "cola": ("CoLA", "dev.tsv", None, ["gj04", "1", "", "Our friends won't buy it."],
             {"sentence": "Our friends won't buy it.", "label": 1}),
    "sst2": ("SST-2", "train.tsv", ["sentence", "label"], ["a fine film ", "1"],
             {"sentence": "a fine film ", "label": 1}),
    "mrpc": ("MRPC", "dev.tsv", ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
             ["0", "1", "2", "He left.", "She stayed."],
             {"sentence1": "He left.", "sentence2": "She stayed.", "label": 0}),
    "qqp": ("QQP", "dev.tsv", ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["7", "1", "2", "Why?", "How?", "1"],
            {"question1": "Why?", "question2": "How?", "label": 1}),
    "stsb": ("STS-B", "dev.tsv",
             ["index", "genre", "filename", "year", "old_index", "source1", "source2",
              "sentence1", "sentence2", "score"],
             ["0", "news", "f", "2012", "1", "s", "s", "A man.", "A guy.", "3.750"],
             {"sentence1": "A man.", "sentence2": "A guy.", "label": 3.75}),
    "mnli": ("MNLI", "dev_matched.tsv",
             ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1",
              "label2", "gold_label"],
             ["0", "1", "1e", "fiction", "P.", "H.", "neutral", "contradiction", "contradiction"],
             {"premise": "P.", "hypothesis": "H.", "label": 2}),
    "qnli": ("QNLI", "dev.tsv", ["index", "question", "sentence", "label"],
             ["0", "Who?", "Me.", "not_entailment"],
             {"question": "Who?", "sentence": "Me.", "label": 1}),
    "rte": ("RTE", "dev.tsv", ["index", "sentence1", "sentence2", "label"],
            ["0", "A dog.", "An animal.", "entailment"],
            {"sentence1": "A dog.", "sentence2": "An animal.", "label": 0}),
    "wnli": ("WNLI", "train.tsv", ["index", "sentence1", "sentence2", "label"],
             ["0", "It fell.", "The cup fell.", "1"],
             {"sentence1": "It fell.", "sentence2": "The cup fell.", "label": 1}),
}
SOURCE_SPLIT = {"dev.tsv": "validation", "train.tsv": "train", "dev_matched.tsv": "validation_matched"}


def write_tsv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


@pytest.mark.parametrize("name", list(GLUE_ROWS))
def test_glue_dir_maps_columns_and_labels_to_hub_fields(tmp_path, name):
    folder, file, header, row, expected = GLUE_ROWS[name]
    write_tsv(tmp_path / folder / file, ([header] if header else []) + [row])
    task = get_task(name)
    [example] = load_raw_examples(task, "glue_dir", SOURCE_SPLIT[file], str(tmp_path), seed=0)
    assert example == expected
    assert task.format_target(example) == ("3.8" if name == "stsb" else str(expected["label"]))


def test_glue_dir_does_not_treat_quotes_as_csv_quoting(tmp_path):
    rows = [["index", "sentence1", "sentence2", "label"],
            ["0", 'He said "hi', "x", "entailment"], ["1", "y", 'z"', "not_entailment"]]
    write_tsv(tmp_path / "RTE" / "train.tsv", rows)
    examples = load_raw_examples(get_task("rte"), "glue_dir", "train", str(tmp_path), seed=0)
    assert [example["sentence1"] for example in examples] == ['He said "hi', "y"]


def test_glue_dir_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(UserError, match=r"RTE/dev\.tsv is missing"):
        load_raw_examples(get_task("rte"), "glue_dir", "validation", str(tmp_path), seed=0)


def test_glue_dir_bad_label_names_file_and_line(tmp_path):
    write_tsv(tmp_path / "RTE" / "train.tsv",
              [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "maybe"]])
    with pytest.raises(UserError, match=r"train\.tsv:2"):
        load_raw_examples(get_task("rte"), "glue_dir", "train", str(tmp_path), seed=0)


def test_glue_dir_refuses_non_glue_tasks(tmp_path):
    with pytest.raises(UserError, match="not in the GLUE TSV layout"):
        load_raw_examples(get_task("imdb"), "glue_dir", "train", str(tmp_path), seed=0)


def test_jsonl_directory_serves_each_split(tmp_path):
    task = custom_task("mine", "text: {text}", ["a", "b"], "accuracy")
    for split, label in (("train", "a"), ("validation", "b")):
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"text": split, "label": label}) + "\n\n")
    examples = load_raw_examples(task, "jsonl", "validation", str(tmp_path), seed=0)
    assert examples == [{"text": "validation", "label": "b"}]


def test_jsonl_single_file_serves_train_only(tmp_path):
    file = tmp_path / "data.jsonl"
    file.write_text(json.dumps({"text": "x", "label": "a"}) + "\n")
    task = custom_task("mine", "text: {text}", ["a"], "accuracy")
    assert len(load_raw_examples(task, "jsonl", "train", str(file), seed=0)) == 1
    with pytest.raises(UserError, match="only serves split 'train'"):
        load_raw_examples(task, "jsonl", "validation", str(file), seed=0)


def test_jsonl_bad_json_and_missing_field_name_file_and_line(tmp_path):
    task = custom_task("mine", "text: {text}", ["a"], "accuracy")
    (tmp_path / "train.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": \n')
    with pytest.raises(UserError, match=r"train\.jsonl:2 is not valid JSON"):
        load_raw_examples(task, "jsonl", "train", str(tmp_path), seed=0)
    (tmp_path / "train.jsonl").write_text('{"text": "x", "label": "a"}\n{"label": "a"}\n')
    with pytest.raises(UserError, match=r"train\.jsonl:2 lacks field\(s\) text"):
        load_raw_examples(task, "jsonl", "train", str(tmp_path), seed=0)


def test_csv_rows_and_missing_field(tmp_path):
    task = custom_task("mine", "q: {question} a: {answer}", ["0", "1"], "accuracy", label_field="y")
    (tmp_path / "test.csv").write_text('question,answer,y\n"Why, then?",yes,1\nHow,no,0\n')
    examples = load_raw_examples(task, "csv", "test", str(tmp_path), seed=0)
    assert examples[0] == {"question": "Why, then?", "answer": "yes", "y": "1"}
    assert task.format_target(examples[1]) == "0"
    (tmp_path / "test.csv").write_text("question,y\nWhy,1\n")
    with pytest.raises(UserError, match=r"test\.csv:2 lacks field\(s\) answer"):
        load_raw_examples(task, "csv", "test", str(tmp_path), seed=0)


def test_local_sources_need_an_existing_path(tmp_path):
    task = custom_task("mine", "text: {text}", ["a"], "accuracy")
    with pytest.raises(UserError, match="needs a path"):
        load_raw_examples(task, "jsonl", "train", None, seed=0)
    with pytest.raises(UserError, match="does not exist"):
        load_raw_examples(task, "csv", "train", str(tmp_path / "nope.csv"), seed=0)
    with pytest.raises(UserError, match=r"validation\.jsonl is missing"):
        load_raw_examples(task, "jsonl", "validation", str(tmp_path), seed=0)


def test_demo_source_and_unknown_source():
    examples = load_raw_examples(get_task("rte"), "demo", "validation", None, seed=3)
    assert len(examples) == 400 and set(examples[0]) == {"sentence1", "sentence2", "label"}
    with pytest.raises(UserError, match="no demo data for task 'cola'"):
        load_raw_examples(get_task("cola"), "demo", "train", None, seed=0)
    with pytest.raises(UserError, match="unknown data source 'ftp'"):
        load_raw_examples(get_task("rte"), "ftp", "train", None, seed=0)


def test_hub_source_refuses_tasks_without_a_hub_dataset():
    task = custom_task("mine", "text: {text}", ["a"], "accuracy")
    with pytest.raises(UserError, match="no hub dataset"):
        load_raw_examples(task, "hf", "train", None, seed=0)

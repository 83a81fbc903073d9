import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hyperexport
from hyperexport.errors import UserError
from hyperexport.recipe.load import load_recipe, recipe_from_dict, recipe_to_dict
from hyperexport.recipe.schema import (
    DEFAULT_RECIPE,
    BackboneConfig,
    DataConfig,
    ModelConfig,
    Recipe,
    TaskConfig,
    TrainConfig,
)
from hyperexport.tasks.registry import GLUE_TASKS

ROOT = Path(__file__).resolve().parents[2]
RECIPE_FILES = sorted((ROOT / "recipes").rglob("*.yaml"))
ALL_RECIPES = [*RECIPE_FILES, DEFAULT_RECIPE]
MINIMAL = {"name": "t", "tasks": [{"name": "rte", "source": "demo"}]}


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(data) -> str:
    with pytest.raises(UserError) as caught:
        recipe_from_dict(data)
    message = str(caught.value)
    assert "\n" not in message
    return message


def with_(section: str, **fields) -> dict:
    return {**MINIMAL, section: fields}


# ----------------------------------------------------------------------------- shipped recipes


def test_every_shipped_recipe_is_found():
    names = {path.relative_to(ROOT).as_posix() for path in RECIPE_FILES}
    assert names >= {
        "recipes/tiny.yaml",
        "recipes/glue-t5-base-hyperformer++.yaml",
        "recipes/glue-t5-small-hyperformer++.yaml",
        "recipes/glue-t5-base-hyperformer.yaml",
        "recipes/glue-t5-base-adapters.yaml",
    }
    assert DEFAULT_RECIPE.is_file()
    assert DEFAULT_RECIPE.parent.parent == Path(hyperexport.__file__).parent  # ships in the package


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda path: path.name)
def test_shipped_recipe_loads_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert isinstance(recipe, Recipe)
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    if path == DEFAULT_RECIPE:
        assert first_line == "# hyperexport train"
    else:
        assert first_line == f"# hyperexport train {path.relative_to(ROOT).as_posix()}"


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda path: path.name)
def test_shipped_recipe_round_trips_through_yaml(path):
    recipe = load_recipe(path)
    text = yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
    assert recipe_from_dict(yaml.safe_load(text)) == recipe


def test_default_recipe_is_the_offline_demo():
    recipe = load_recipe()
    assert recipe == load_recipe(DEFAULT_RECIPE)
    assert recipe.backbone == BackboneConfig(config="t5-demo", pretrained=None, tokenizer="demo-words")
    assert [(task.name, task.source) for task in recipe.tasks] == [
        ("rte", "demo"), ("sst2", "demo"), ("mrpc", "demo")
    ]


def test_tiny_recipe_is_small():
    recipe = load_recipe(ROOT / "recipes" / "tiny.yaml")
    assert recipe.backbone.config == "t5-test" and recipe.backbone.pretrained is None
    assert {task.source for task in recipe.tasks} == {"demo"}
    assert (recipe.train.max_steps, recipe.train.batch_size, recipe.train.eval_every) == (8, 4, 4)
    assert (recipe.data.max_source_length, recipe.data.max_target_length) == (64, 8)
    assert {(t.max_train_examples, t.max_eval_examples) for t in recipe.tasks} == {(40, 16)}


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").rglob("glue-*.yaml")), ids=lambda p: p.name)
def test_glue_recipes_use_the_papers_settings(path):
    recipe = load_recipe(path)
    size = "small" if "t5-small" in path.name else "base"
    assert recipe.backbone == BackboneConfig(f"t5-{size}", f"t5-{size}", f"t5-{size}")
    assert sorted(task.name for task in recipe.tasks) == sorted(GLUE_TASKS)
    assert {task.source for task in recipe.tasks} == {"hf"}
    assert recipe.model.reduction_factor == 32 and recipe.model.task_embedding_dim == 64
    assert recipe.data == DataConfig()  # the defaults are the paper's data settings
    assert recipe.train == TrainConfig(log_every=200)  # ... and its training settings
    expected_variant = {"hyperformer++": "hyperformer++", "hyperformer": "hyperformer", "adapters": "adapters"}
    variant = path.stem.rsplit("-", 1)[-1]
    assert recipe.model.variant == expected_variant[variant]
    assert recipe.model.task_projector_input_dim == (512 if variant == "hyperformer" else None)


# -------------------------------------------------------------------------- structural checks


def test_minimal_recipe_takes_the_defaults():
    recipe = recipe_from_dict(MINIMAL)
    assert recipe.tasks == (TaskConfig(name="rte", source="demo"),)
    assert (recipe.backbone, recipe.model, recipe.data, recipe.train) == (
        BackboneConfig(), ModelConfig(), DataConfig(), TrainConfig()
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.name = "other"


def test_unknown_key_suggests_the_close_one():
    message = error_of(with_("train", learnig_rate=0.1))
    assert "train.learnig_rate: unknown key (did you mean 'learning_rate'?)" in message
    assert "has 1 problem:" in message


def test_unknown_top_level_key():
    assert "modle: unknown key (did you mean 'model'?)" in error_of({**MINIMAL, "modle": {}})


def test_duplicate_key_reports_its_line(tmp_path):
    path = write(tmp_path, "name: a\ntasks: [{name: rte, source: demo}]\nname: b\n")
    with pytest.raises(UserError, match=r"line 3: duplicate key 'name'"):
        load_recipe(path)


def test_nested_duplicate_key(tmp_path):
    text = "name: a\ntasks: [{name: rte, source: demo}]\ntrain:\n  seed: 1\n  seed: 2\n"
    with pytest.raises(UserError, match=r"line 5: duplicate key 'seed'"):
        load_recipe(write(tmp_path, text))


@pytest.mark.parametrize(
    ("section", "field", "value", "expected"),
    [
        ("train", "max_steps", True, "train.max_steps: expected an integer, got true"),
        ("train", "max_steps", 1.5, "train.max_steps: expected an integer, got 1.5"),
        ("train", "max_steps", "10", "train.max_steps: expected an integer, got '10'"),
        ("train", "max_steps", None, "train.max_steps: expected an integer, got null"),
        ("train", "learning_rate", "fast", "train.learning_rate: expected a number, got 'fast'"),
        ("train", "learning_rate", False, "train.learning_rate: expected a number, got false"),
        ("train", "learning_rate", float("nan"), "train.learning_rate: expected a finite number"),
        ("train", "precision", "fp8", "train.precision: expected one of fp32, bf16, fp16, got 'fp8'"),
        ("model", "variant", "adapter", "(did you mean 'adapters'?)"),
        ("data", "mixed_task_batches", 1, "data.mixed_task_batches: expected true or false, got 1"),
        ("backbone", "tokenizer", 5, "backbone.tokenizer: expected a string, got 5 (quote it"),
        ("backbone", "config", ["t5-small"], "backbone.config: expected a string, got a list"),
        ("model", "task_projector_input_dim", "512", "expected an integer, got '512'"),
    ],
)
def test_wrong_types(section, field, value, expected):
    assert expected in error_of(with_(section, **{field: value}))


def test_int_is_accepted_for_float_and_lists_become_tuples():
    data = {**MINIMAL, "train": {"learning_rate": 1}}
    data["tasks"] = [{"name": "mine", "source": "jsonl", "path": "/data/mine",
                      "template": "text: {text}", "labels": ["a", "b"], "metric": "accuracy"}]
    recipe = recipe_from_dict(data)
    assert recipe.train.learning_rate == 1.0 and isinstance(recipe.train.learning_rate, float)
    assert recipe.tasks[0].labels == ("a", "b")
    assert isinstance(recipe.tasks, tuple)


def test_none_only_where_the_field_allows_it():
    assert recipe_from_dict(with_("model", task_projector_input_dim=None)).model.task_projector_input_dim is None
    assert "model.reduction_factor: expected an integer, got null" in error_of(
        with_("model", reduction_factor=None)
    )


def test_nested_paths_and_list_items():
    data = {"name": "t", "tasks": [{"name": "rte", "source": "demo"}, {"name": "x", "labels": ["a", 1]}]}
    assert "tasks[1].labels[1]: expected a string, got 1" in error_of(data)


@pytest.mark.parametrize("data", [None, [], "recipe", 3])
def test_top_level_must_be_a_mapping(data):
    assert "top level: expected a mapping" in error_of(data)


def test_missing_required_fields():
    message = error_of({"tasks": [{"source": "demo"}]})
    assert "name: missing (required)" in message
    assert "tasks[0].name: missing (required)" in message


def test_every_problem_in_one_line(tmp_path):
    text = """\
name: bad
tasks:
  - {name: rte, source: demo, lables: [a]}
  - {source: jsonl}
model: {variant: adapter, reduction_factor: 0}
train: {batch_size: true}
data: {temperature: 0, max_source_length: "128"}
train: {label_smoothing: 1, lr: 1}
"""
    with pytest.raises(UserError) as caught:
        load_recipe(write(tmp_path, text))
    message = str(caught.value)
    expected = [
        "line 8: duplicate key 'train'",
        "tasks[0].lables: unknown key (did you mean 'labels'?)",
        "tasks[1].name: missing (required)",
        "model.variant: expected one of hyperformer++, hyperformer, hyperformer-layer, adapters, got 'adapter'",
        "model.reduction_factor: must be > 0, got 0",
        "data.temperature: must be > 0, got 0.0",
        "data.max_source_length: expected an integer, got '128'",
        "train.label_smoothing: must be < 1, got 1.0",  # the later `train` wins: no batch_size problem
        "train.lr: unknown key",
    ]
    for fragment in expected:
        assert fragment in message
    assert "\n" not in message
    assert message.startswith(f"recipe {tmp_path / 'recipe.yaml'} has {len(expected)} problems: ")
    assert message.count("; ") == len(expected) - 1


def test_later_duplicate_wins_but_is_still_an_error(tmp_path):
    text = "name: bad\ntasks: [{name: rte, source: demo}]\ntrain: {batch_size: true}\ntrain: {seed: 1}\n"
    with pytest.raises(UserError, match="has 1 problem: line 4: duplicate key 'train'$"):
        load_recipe(write(tmp_path, text))


# -------------------------------------------------------------------------------- YAML and files


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [a\n", "invalid YAML at line 2"),
        ("name: a\n  b: c\n", "invalid YAML at line 2"),
        ("\tname: a\n", "invalid YAML at line 1"),
        ("name: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
        ("name: !!int x\n", "invalid YAML"),
        ("[" * 5000, "invalid YAML"),
    ],
)
def test_invalid_yaml_names_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as caught:
        load_recipe(path)
    message = str(caught.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_yaml_12_scalars(tmp_path):
    text = """\
name: 2021-01-01
tasks:
  - {name: yn, source: csv, path: data.csv, template: "q: {q}", labels: [no, yes], metric: accuracy}
train: {learning_rate: 3e-4, adam_epsilon: 1E-8}
"""
    recipe = load_recipe(write(tmp_path, text))
    assert recipe.name == "2021-01-01"
    assert recipe.tasks[0].labels == ("no", "yes")
    assert recipe.train.learning_rate == 3e-4 and recipe.train.adam_epsilon == 1e-8
    path = write(tmp_path, "{name: t, tasks: [{name: rte, source: demo}], data: {validation_leak: on}}")
    with pytest.raises(UserError, match="data.validation_leak: expected true or false, got 'on'"):
        load_recipe(path)


@pytest.mark.parametrize("make", [lambda tmp: tmp / "absent.yaml", lambda tmp: tmp])
def test_missing_file(tmp_path, make):
    path = make(tmp_path)
    with pytest.raises(UserError, match=r"^no recipe at .*: pass a path to a YAML recipe \(see recipes/\)$"):
        load_recipe(path)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    text = """\
name: local
backbone: {config: configs/t5.json, pretrained: ./weights, tokenizer: google/byt5-small}
tasks:
  - {name: rte, source: glue_dir, path: glue}
  - {name: mine, source: jsonl, path: ../mine, template: "t: {t}", labels: ["0", "1"], metric: f1}
"""
    folder = tmp_path / "sub"
    folder.mkdir()
    recipe = load_recipe(write(folder, text))
    folder = folder.resolve()
    assert recipe.backbone.config == str(folder / "configs" / "t5.json")
    assert recipe.backbone.pretrained == str(folder / "weights")
    assert recipe.backbone.tokenizer == "google/byt5-small"  # a hub id stays as it is
    assert recipe.tasks[0].path == str(folder / "glue")
    assert recipe.tasks[1].path == str(tmp_path.resolve() / "mine")
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe


# ---------------------------------------------------------------------------- semantic checks


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "t", "tasks": []}, "tasks: at least one task is required"),
        ({"name": "t", "tasks": [{"name": "rte", "source": "demo"}] * 2}, "tasks: 'rte' appears 2 times"),
        ({"name": "a b", "tasks": MINIMAL["tasks"]}, "name: 'a b' is not a valid name"),
        ({"name": "", "tasks": MINIMAL["tasks"]}, "name: must not be empty"),
        (with_("train", max_steps=0), "train.max_steps: must be > 0, got 0"),
        (with_("train", batch_size=-1), "train.batch_size: must be > 0, got -1"),
        (with_("train", eval_batch_size=0), "train.eval_batch_size: must be > 0"),
        (with_("train", learning_rate=0), "train.learning_rate: must be > 0"),
        (with_("train", warmup_steps=-1), "train.warmup_steps: must be >= 0, got -1"),
        (with_("train", label_smoothing=1.0), "train.label_smoothing: must be < 1, got 1.0"),
        (with_("train", label_smoothing=-0.1), "train.label_smoothing: must be >= 0"),
        (with_("data", temperature=0), "data.temperature: must be > 0, got 0.0"),
        (with_("data", max_source_length=0), "data.max_source_length: must be > 0"),
        (with_("data", max_target_length=-4), "data.max_target_length: must be > 0"),
        (with_("model", reduction_factor=0), "model.reduction_factor: must be > 0"),
        (with_("model", task_embedding_dim=0), "model.task_embedding_dim: must be > 0"),
        (with_("model", hypernet_hidden_dim=0), "model.hypernet_hidden_dim: must be > 0"),
        (with_("model", variant="adapters", task_projector_input_dim=512), "adapters variant has no task"),
        (with_("backbone", config="t5-smal"), "backbone.config: 't5-smal' is neither a preset (did you mean"),
        ({"name": "t", "tasks": [{"name": "cola", "source": "demo"}]},
         "tasks[0].source: demo data exists only for rte, sst2, mrpc, not 'cola'"),
        ({"name": "t", "tasks": [{"name": "rte", "source": "jsonl"}]},
         "tasks[0].path: required for source jsonl"),
        ({"name": "t", "tasks": [{"name": "rte", "source": "glue_dir"}]},
         "tasks[0].path: required for source glue_dir"),
        ({"name": "t", "tasks": [{"name": "rte", "labels": ["a"]}]},
         "tasks[0]: 'rte' is a built-in task, so labels cannot be set"),
        ({"name": "t", "tasks": [{"name": "mrcp"}]},
         "tasks[0]: 'mrcp' is not a built-in task (did you mean 'mrpc'?), and a custom task "
         "must set template, labels and metric (missing: template, labels, metric)"),
        ({"name": "t", "tasks": [{"name": "x", "source": "hf", "template": "{a}", "labels": ["0"],
                                  "metric": "accuracy"}]},
         "tasks[0].source: a custom task reads jsonl or csv files, not hf"),
        ({"name": "t", "tasks": [{"name": "x", "source": "csv", "path": "x.csv", "template": "{a}",
                                  "labels": ["0", "0"], "metric": "accuracy"}]},
         "tasks[0].labels: must be distinct"),
        ({"name": "t", "tasks": [{"name": "x", "source": "csv", "path": "x.csv", "template": "{a}",
                                  "labels": ["0", "1"], "metric": "bleu"}]},
         "tasks[0]: task 'x': metric bleu is unknown"),
        ({"name": "t", "tasks": [{"name": "x", "source": "csv", "path": "x.csv", "template": "{",
                                  "labels": ["0", "1"], "metric": "accuracy"}]},
         "tasks[0]: template '{' is malformed"),
        ({"name": "t", "tasks": [{"name": "../x", "source": "csv", "path": "x.csv", "template": "{a}",
                                  "labels": ["0", "1"], "metric": "accuracy"}]},
         "tasks[0].name: '../x' is not a valid name"),
    ],
)
def test_semantic_problems(data, expected):
    assert expected in error_of(data)


def test_semantic_and_structural_problems_together():
    data = {"name": "t", "tasks": [{"name": "cola", "source": "demo"}], "train": {"seed": "x"}}
    message = error_of(data)
    assert "has 2 problems" in message
    assert "tasks[0].source: demo data exists only" in message and "train.seed: expected an integer" in message


def test_zero_is_allowed_where_it_means_none():
    recipe = recipe_from_dict(with_("train", warmup_steps=0, weight_decay=0, label_smoothing=0, seed=0))
    assert (recipe.train.warmup_steps, recipe.train.label_smoothing, recipe.train.seed) == (0, 0.0, 0)


# ------------------------------------------------------------------------------ property tests

FIELD_NAMES = sorted(
    {field.name for cls in (Recipe, BackboneConfig, ModelConfig, TaskConfig, DataConfig, TrainConfig)
     for field in dataclasses.fields(cls)}
)
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats()
    | st.text(max_size=12) | st.sampled_from(["rte", "demo", "jsonl", "hyperformer++", "t5-test"])
)
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=8) | st.integers() | st.none() | st.booleans()
VALUES = st.recursive(
    SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=20,
)
SECTIONS = {"backbone": BackboneConfig, "model": ModelConfig, "data": DataConfig, "train": TrainConfig}
FIELD_PATHS = [(section, field.name) for section, cls in SECTIONS.items() for field in dataclasses.fields(cls)]
FIELD_PATHS += [("tasks", field.name) for field in dataclasses.fields(TaskConfig)]
FIELD_PATHS += [(None, field.name) for field in dataclasses.fields(Recipe)]


def recipe_or_user_error(data) -> None:
    try:
        assert isinstance(recipe_from_dict(data), Recipe)
    except UserError as error:
        message = str(error)
        assert message and "\n" not in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=8))
def test_any_mapping_gives_a_recipe_or_a_user_error(data):
    recipe_or_user_error(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(FIELD_PATHS), VALUES)
def test_any_field_value_gives_a_recipe_or_a_user_error(where, value):
    section, field = where
    data = {"name": "t", "tasks": [{"name": "rte", "source": "demo"}], **{name: {} for name in SECTIONS}}
    target = data if section is None else data["tasks"][0] if section == "tasks" else data[section]
    target[field] = value
    recipe_or_user_error(data)


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=200))
def test_any_text_file_gives_a_recipe_or_a_user_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        assert isinstance(load_recipe(path), Recipe)
    except UserError as error:
        assert "\n" not in str(error)


def recipe_file_or_user_error(path) -> None:
    try:
        assert isinstance(load_recipe(path), Recipe)
    except UserError as error:
        assert str(error) and "\n" not in str(error)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_file_gives_a_recipe_or_a_user_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
    path.write_bytes(data)
    recipe_file_or_user_error(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, VALUES, max_size=8), st.sampled_from(FIELD_PATHS), VALUES)
def test_any_yaml_document_gives_a_recipe_or_a_user_error(tmp_path_factory, data, where, value):
    """Structured documents through the file loader: a near-valid recipe with one field replaced, and
    arbitrary mappings, dumped by a YAML 1.1 emitter (so tags, quoting and anchors vary)."""
    import yaml

    section, field = where
    recipe = {"name": "t", "tasks": [{"name": "rte", "source": "demo"}], **{name: {} for name in SECTIONS}}
    target = recipe if section is None else recipe["tasks"][0] if section == "tasks" else recipe[section]
    target[field] = value
    for document in (recipe, data):
        path = tmp_path_factory.mktemp("fuzz") / "recipe.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8", errors="surrogatepass")
        recipe_file_or_user_error(path)

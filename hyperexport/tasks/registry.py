"""The task registry: how each task turns a raw example into a (source, target) text pair.

One `TaskSpec` per task holds every fact about it (method §6, §8): the source template (no task
prefix, as for adapter and hypernetwork models), the label strings, the metrics, the prediction
post-processing, the hub location and the split protocol. Field names are the hub dataset's columns.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Formatter
from types import MappingProxyType

from hyperexport.errors import UserError
from hyperexport.tasks.metrics import METRICS, REGRESSION_METRICS

POSTPROCESSORS = ("string", "int", "float")
SPLIT_POLICIES = ("small", "large", "direct")
REQUESTED_SPLITS = ("train", "validation", "test")

BINARY_LABELS = ("0", "1")
THREE_LABELS = ("0", "1", "2")
STSB_LABELS = tuple(f"{step * 0.2:.1f}" for step in range(26))  # "0.0", "0.2", ..., "5.0"

DEV_AS_TEST = MappingProxyType({"train": "train", "validation": "validation", "test": "validation"})
TEST_AS_DEV = MappingProxyType({"train": "train", "validation": "test", "test": "test"})
OWN_SPLITS = MappingProxyType({"train": "train", "validation": "validation", "test": "test"})
MNLI_SPLITS = MappingProxyType(
    {"train": "train", "validation": "validation_mismatched", "test": "validation_matched"}
)
ENTAILMENT_IDS = MappingProxyType({"entailment": 0, "not_entailment": 1})
ENTAILMENT_NAMES = ("entailment", "not_entailment")


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """Everything that turns one raw example of a task into text, and its outputs into metrics."""

    name: str
    template: str  # str.format over the example's fields
    labels: tuple[str, ...]  # target strings; class id = index
    metrics: tuple[str, ...]  # names in metrics.METRICS, in reporting order
    postprocess: str  # "string" | "int" | "float"
    label_field: str = "label"
    hf_path: str | None = None
    hf_config: str | None = None
    split_map: Mapping[str, str]  # requested split -> source split
    split_policy: str  # "small" | "large" | "direct" (method §6)
    label_map: Mapping[str, int] | None = None  # raw string label -> class id
    label_names: tuple[str, ...] | None = None  # what each label string means ("0" -> "entailment"); None: itself
    is_regression: bool = False

    def __post_init__(self):
        object.__setattr__(self, "split_map", MappingProxyType(dict(self.split_map)))
        if self.label_map is not None:
            object.__setattr__(self, "label_map", MappingProxyType(dict(self.label_map)))
        _check_spec(self)

    @property
    def source_fields(self) -> tuple[str, ...]:
        """The example fields the template reads, in order of first use."""
        return template_fields(self.template)

    def format_source(self, example: Mapping) -> str:
        """The template filled with the example's fields."""
        missing = [field for field in self.source_fields if field not in example]
        if missing:
            raise UserError(
                f"task '{self.name}': example lacks field(s) {', '.join(missing)}; "
                f"give every example the fields {', '.join(self.source_fields)}"
            )
        return self.template.format(**{field: example[field] for field in self.source_fields})

    def format_target(self, example: Mapping) -> str:
        """The target string: str(label), string labels through label_map, STS-B rounded to 0.1."""
        if self.label_field not in example:
            raise UserError(
                f"task '{self.name}': example lacks its label field '{self.label_field}'; "
                "add the label to every example"
            )
        label = example[self.label_field]
        if self.is_regression:
            return self._regression_target(label)
        target = self._class_target(label)
        if target not in self.labels:
            raise UserError(
                f"task '{self.name}': label {label!r} is not one of {', '.join(self.labels)}; "
                "fix the data or declare the task's labels"
            )
        return target

    def _regression_target(self, label) -> str:
        try:
            return str(round(float(label), 1))  # method §6: 1 decimal, not the 0.2 grid
        except (TypeError, ValueError):
            raise UserError(f"task '{self.name}': label {label!r} is not a number; fix the data") from None

    def _class_target(self, label) -> str:
        if isinstance(label, bool):
            return str(int(label))
        if isinstance(label, str) and self.label_map is not None and label in self.label_map:
            return str(self.label_map[label])
        return str(label)


def template_fields(template: str) -> tuple[str, ...]:
    """Field names of a str.format template; UserError for positional or malformed fields."""
    try:
        names = [name for _, name, _, _ in Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise UserError(f"template {template!r} is malformed ({error}); use '{{field}}' placeholders") from None
    if not names or any(not name.isidentifier() for name in names):
        raise UserError(f"template {template!r} needs named fields such as '{{sentence}}'")
    return tuple(dict.fromkeys(names))


def _check_spec(spec: TaskSpec) -> None:
    problems = []
    if not spec.labels:
        problems.append("labels are empty")
    if not spec.metrics or any(metric not in METRICS for metric in spec.metrics):
        problems.append(f"metrics {spec.metrics} are not among {', '.join(METRICS)}")
    if spec.postprocess not in POSTPROCESSORS:
        problems.append(f"postprocess '{spec.postprocess}' is not one of {', '.join(POSTPROCESSORS)}")
    if spec.split_policy not in SPLIT_POLICIES:
        problems.append(f"split_policy '{spec.split_policy}' is not one of {', '.join(SPLIT_POLICIES)}")
    if set(spec.split_map) != set(REQUESTED_SPLITS):
        problems.append(f"split_map keys must be {', '.join(REQUESTED_SPLITS)}")
    if spec.label_names is not None and len(spec.label_names) != len(spec.labels):
        problems.append(f"{len(spec.label_names)} label names for {len(spec.labels)} labels")
    if problems:
        raise UserError(f"task '{spec.name}': {'; '.join(problems)}; fix the task declaration")
    template_fields(spec.template)


def _glue(name: str, template: str, split_policy: str, **overrides) -> TaskSpec:
    """A GLUE task on nyu-mll/glue whose test split is the original dev set (method §6)."""
    fields = dict(
        labels=BINARY_LABELS, metrics=("accuracy",), postprocess="string",
        hf_path="nyu-mll/glue", hf_config=name, split_map=DEV_AS_TEST,
    )
    return TaskSpec(name=name, template=template, split_policy=split_policy, **(fields | overrides))


def _transfer(name: str, template: str, hf_path: str, hf_config: str | None, **overrides) -> TaskSpec:
    """A transfer task (method §6 table, lower half), accuracy on raw strings."""
    fields = dict(labels=BINARY_LABELS, metrics=("accuracy",), postprocess="string")
    return TaskSpec(
        name=name, template=template, hf_path=hf_path, hf_config=hf_config, **(fields | overrides)
    )


_PAIR = "sentence1: {sentence1} sentence2: {sentence2}"
_PREMISE = "premise: {premise} hypothesis: {hypothesis}"

_ALL_TASKS = (
    _glue("cola", "sentence: {sentence}", "small", metrics=("mcc",), postprocess="int",
          label_names=("unacceptable", "acceptable")),
    _glue("sst2", "sentence: {sentence}", "large", label_names=("negative", "positive")),
    _glue("mrpc", _PAIR, "small", metrics=("f1", "accuracy"), postprocess="int",
          label_names=("not_equivalent", "equivalent")),
    _glue("qqp", "question1: {question1} question2: {question2}", "large",
          metrics=("f1", "accuracy"), postprocess="int", label_names=("not_duplicate", "duplicate")),
    _glue("stsb", _PAIR, "small", labels=STSB_LABELS, metrics=("pearson", "spearman"),
          postprocess="float", is_regression=True),
    _glue("mnli", "premise: {premise} hypothesis {hypothesis}", "direct", labels=THREE_LABELS,
          split_map=MNLI_SPLITS, label_map={"entailment": 0, "neutral": 1, "contradiction": 2},
          label_names=("entailment", "neutral", "contradiction")),
    _glue("qnli", "question: {question} sentence: {sentence}", "large", label_map=ENTAILMENT_IDS,
          label_names=ENTAILMENT_NAMES),
    _glue("rte", _PAIR, "small", label_map=ENTAILMENT_IDS, label_names=ENTAILMENT_NAMES),
    _glue("wnli", _PAIR, "small", label_names=("not_entailment", "entailment")),
    _transfer("superglue-boolq", "question: {question} passage: {passage}", "aps/super_glue",
              "boolq", split_map=DEV_AS_TEST, split_policy="small", label_names=("false", "true")),
    _transfer("superglue-cb", _PREMISE, "aps/super_glue", "cb", labels=THREE_LABELS,
              split_map=DEV_AS_TEST, split_policy="small",
              label_map={"entailment": 0, "contradiction": 1, "neutral": 2},
              label_names=("entailment", "contradiction", "neutral")),
    _transfer("superglue-rte", _PREMISE, "aps/super_glue", "rte", split_map=DEV_AS_TEST,
              split_policy="direct", label_map=ENTAILMENT_IDS, label_names=ENTAILMENT_NAMES),
    _transfer("scitail", _PAIR, "allenai/scitail", "snli_format", split_map=OWN_SPLITS,
              split_policy="direct", label_field="gold_label",
              label_map={"entailment": 0, "neutral": 1}, label_names=("entailment", "neutral")),
    _transfer("paws", _PAIR, "google-research-datasets/paws", "labeled_final",
              split_map=OWN_SPLITS, split_policy="direct", label_names=("not_paraphrase", "paraphrase")),
    _transfer("imdb", "{text}", "stanfordnlp/imdb", None, split_map=TEST_AS_DEV,
              split_policy="small", label_names=("negative", "positive")),
    _transfer("yelp_polarity", "sentence: {text}", "fancyzhx/yelp_polarity", "plain_text",
              split_map=TEST_AS_DEV, split_policy="large", label_names=("negative", "positive")),
    _transfer("trec", "sentence: {text}", "CogComp/trec", None, labels=tuple("012345"),
              split_map=TEST_AS_DEV, split_policy="small", label_field="coarse_label",
              label_names=("abbreviation", "entity", "description", "human", "location", "number")),
)

TASKS: Mapping[str, TaskSpec] = MappingProxyType({task.name: task for task in _ALL_TASKS})
GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")


def get_task(name: str) -> TaskSpec:
    """The registered task called `name`."""
    if name not in TASKS:
        raise UserError(
            f"unknown task '{name}': known tasks are {', '.join(TASKS)}; "
            "declare template, labels and metric in the recipe for a custom task"
        )
    return TASKS[name]


def custom_task(
    name: str,
    template: str,
    labels: Sequence[str],
    metric: str | Sequence[str],
    label_field: str = "label",
) -> TaskSpec:
    """A task declared in a recipe, read from local JSONL/CSV files with its own splits."""
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    _check_custom_metrics(name, metrics, tuple(labels))
    is_regression = any(metric in REGRESSION_METRICS for metric in metrics)
    postprocess = "float" if is_regression else "int" if "f1" in metrics else "string"
    return TaskSpec(
        name=name, template=template, labels=tuple(str(label) for label in labels),
        metrics=metrics, postprocess=postprocess, label_field=label_field,
        split_map=OWN_SPLITS, split_policy="direct", is_regression=is_regression,
    )


def _check_custom_metrics(name: str, metrics: tuple[str, ...], labels: tuple[str, ...]) -> None:
    unknown = [metric for metric in metrics if metric not in METRICS]
    if not metrics or unknown:
        raise UserError(
            f"task '{name}': metric {', '.join(unknown) or '(none)'} is unknown; "
            f"choose from {', '.join(METRICS)}"
        )
    if not labels:
        raise UserError(f"task '{name}': labels are empty; list the target strings in the recipe")
    regression = [metric in REGRESSION_METRICS for metric in metrics]
    if any(regression) and not all(regression):
        raise UserError(f"task '{name}': mixes regression and classification metrics; pick one kind")
    if "f1" in metrics and tuple(str(label) for label in labels) != BINARY_LABELS:
        raise UserError(f"task '{name}': metric f1 needs labels ['0', '1']; use accuracy otherwise")


def max_target_tokens(task: TaskSpec, tokenizer) -> int:
    """Longest label in tokens, </s> included: the generation length of the task (method §8)."""
    return max(len(tokenizer(label).input_ids) for label in task.labels)

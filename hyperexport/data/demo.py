"""Synthetic offline stand-ins for rte, sst2 and mrpc: short English from small word lists.

The examples use the hub datasets' fields and label conventions, so the real templates and metrics
apply unchanged. The labels follow lexical cues, so that a tiny random-init T5 whose backbone stays
frozen (only adapters, task embeddings and layer norms train) learns them in minutes on a CPU:
- sst2: a sentence with sentiment adjectives of one polarity (label 1 = positive);
- rte: sentence1 describes an animal (colour, action, place); sentence2 states one of those
  attributes (0 = entailment) or denies it with a negation (1 = not_entailment);
- mrpc: two wordings of "someone gives something to someone"; the same facts (1 = paraphrase) or
  the second denies them with "never" (0).
rte and mrpc share their template and their cue but map it to opposite labels, so only the task
embedding tells the two tasks apart. (Relational variants, such as a swapped colour, stayed at chance
for this tiny frozen backbone within the demo's time budget.)
Texts are unique within a split, and a hash of each text decides its split, so train, validation
and the halves the split protocol cuts from validation never share an example.

Held out (never trained by the demo recipe; `hyperexport adapt` learns it from a few examples):
- scitail: rte's premise; the hypothesis states one of its attributes (gold_label "entailment"),
  or is "neutral": it denies an attribute (rte's cue) or gives the animal a mood ("the fox is sad")
  that the premise never mentions (a cue rte never saw). rte's embedding is a related start, not the
  answer. Its words are all in the demo vocabulary, which stays that of the three trained tasks.
"""

import random
import zlib
from collections.abc import Callable
from typing import TypedDict

from hyperexport.errors import UserError
from hyperexport.tasks.registry import get_task

DEMO_SPLIT_SIZES = {"train": 2000, "validation": 400}
VALIDATION_SHARE = 5  # one text in five belongs to validation
MAX_DRAWS_PER_EXAMPLE = 10_000  # bounds the search once a word list runs out of new texts

NAMES = ("anna", "ben", "carl", "dina", "eva", "finn")
COLOURS = ("red", "blue", "green", "black", "white")
ANIMALS = ("fox", "cat", "dog", "owl", "bear")
ACTIONS = ("sleeps", "runs", "eats", "sings", "hides")
PLACES = ("in the park", "in the barn", "by the lake", "on the hill", "in the yard")
TIMES = ("at dawn", "at noon", "at night", "today")  # filler: never what sentence2 asks about
THINGS = ("film", "song", "meal", "trip", "show", "book", "party")
POSITIVE = ("great", "lovely", "fun", "superb", "happy", "good")
NEGATIVE = ("awful", "dull", "boring", "bad", "grim", "sad")
OBJECTS = ("ball", "hat", "book", "cup", "kite")
GIVE_VERBS = ("gave", "handed", "passed")  # synonyms
NEGATIONS = ("not", "never", "no longer")
LABEL_FIELDS = ("label", "gold_label")  # scitail's label field is gold_label


def demo_examples(task_name: str, split: str, n: int, seed: int) -> list[dict]:
    """`n` label-balanced synthetic examples of `task_name` (a trained or held-out demo task) for `split`."""
    generators = {**DEMO_GENERATORS, **HELD_OUT_GENERATORS}
    if task_name not in generators:
        raise UserError(
            f"no demo data for task '{task_name}'; demo tasks are {', '.join(generators)}"
        )
    if split not in DEMO_SPLIT_SIZES:
        raise UserError(f"demo data has no split '{split}'; it has {', '.join(DEMO_SPLIT_SIZES)}")
    rng = random.Random(f"{task_name}/{split}/{seed}")
    labels = [index % 2 for index in range(n)]
    rng.shuffle(labels)
    generate = generators[task_name]
    seen: set[str] = set()
    return [_new_example_of_split(generate, rng, label, split, seen) for label in labels]


def _new_example_of_split(
    generate: Callable, rng: random.Random, label: int, split: str, seen: set[str]
) -> dict:
    """A generated example of `split` whose text is not in `seen` (which it joins)."""
    for _ in range(MAX_DRAWS_PER_EXAMPLE):
        example = generate(rng, label)
        text = example_text(example)
        if text not in seen and split_of_text(text) == split:
            seen.add(text)
            return example
    raise UserError(
        f"demo data ran out of distinct {split} examples after {len(seen)}; ask for fewer examples"
    )


def example_text(example: dict) -> str:
    """The text fields of an example joined, label excluded."""
    return "|".join(str(value) for key, value in sorted(example.items()) if key not in LABEL_FIELDS)


def split_of_text(text: str) -> str:
    """The demo split a text belongs to; fixed by the text so splits never overlap."""
    return "validation" if zlib.crc32(text.encode()) % VALIDATION_SHARE == 0 else "train"


def _other(rng: random.Random, words: tuple[str, ...], word: str) -> str:
    """A word of the same list different from `word`."""
    return rng.choice([other for other in words if other != word])


# --- sst2 ---------------------------------------------------------------------------------------


def sst2_example(rng: random.Random, label: int) -> dict:
    """label 1 = positive: one or two adjectives from the positive (else negative) list."""
    adjectives = POSITIVE if label == 1 else NEGATIVE
    first, second = rng.sample(adjectives, 2)
    name, thing, place = rng.choice(NAMES), rng.choice(THINGS), rng.choice(PLACES)
    sentence = rng.choice((
        f"{name} said the {thing} was {first}",
        f"the {thing} {place} was {first} and {second}",
        f"a {first} {thing} for {name}",
        f"{name} found the {thing} {first} and {second}",
    ))
    return {"sentence": sentence, "label": label}


# --- rte ----------------------------------------------------------------------------------------


def rte_example(rng: random.Random, label: int) -> dict:
    """label 0 = entailment: sentence2 states an attribute of sentence1's animal; 1 = denies it."""
    animal = rng.choice(ANIMALS)
    colour, action, place = rng.choice(COLOURS), rng.choice(ACTIONS), rng.choice(PLACES)
    sentence1 = f"the {colour} {animal} {action} {place} {rng.choice(TIMES)}"
    attribute = rng.choice((action, f"is {colour}", f"is {place}"))
    if label == 1:
        verb, _, rest = attribute.partition(" ")
        negation = rng.choice(("never", "no longer"))
        attribute = f"{negation} {attribute}" if not rest else f"{verb} {rng.choice(NEGATIONS)} {rest}"
    return {"sentence1": sentence1, "sentence2": f"the {animal} {attribute}", "label": label}


# --- mrpc ---------------------------------------------------------------------------------------

# (wording, verb) pairs that render a gift; a paraphrase picks a rendering other than sentence1's.
RENDERINGS = (*(("active", verb) for verb in GIVE_VERBS), ("got", None), ("went", None))


class _Facts(TypedDict):
    giver: str
    colour: str
    thing: str
    receiver: str


def _render(rendering: tuple, giver: str, colour: str, thing: str, receiver: str, negated: bool = False) -> str:
    wording, verb = rendering
    never = "never " if negated else ""
    if wording == "active":
        return f"{giver} {never}{verb} the {colour} {thing} to {receiver}"
    if wording == "got":
        return f"{receiver} {never}got the {colour} {thing} from {giver}"
    return f"the {colour} {thing} {never}went from {giver} to {receiver}"


def mrpc_example(rng: random.Random, label: int) -> dict:
    """label 1 = paraphrase: the same facts reworded; 0 = reworded and denied with "never"."""
    giver, receiver = rng.sample(NAMES, 2)
    facts = _Facts(giver=giver, colour=rng.choice(COLOURS), thing=rng.choice(OBJECTS), receiver=receiver)
    first = rng.choice(RENDERINGS)
    second = rng.choice([rendering for rendering in RENDERINGS if rendering != first])
    return {
        "sentence1": _render(first, **facts),
        "sentence2": _render(second, **facts, negated=label == 0),
        "label": label,
    }


# --- scitail (held out) ------------------------------------------------------------------------

SCITAIL_LABELS = ("entailment", "neutral")  # the hub's gold_label strings; the registry maps them to 0 / 1


def scitail_example(rng: random.Random, label: int) -> dict:
    """label 0 = entailment (as rte's 0); 1 = neutral: a denied attribute (rte's cue) or a mood."""
    example = rte_example(rng, label)
    if label == 1 and rng.random() < 0.5:
        animal = example["sentence2"].split()[1]
        example["sentence2"] = f"the {animal} is {rng.choice(POSITIVE + NEGATIVE)}"
    return {"sentence1": example["sentence1"], "sentence2": example["sentence2"],
            "gold_label": SCITAIL_LABELS[label]}


DEMO_GENERATORS: dict[str, Callable[[random.Random, int], dict]] = {
    "rte": rte_example,
    "sst2": sst2_example,
    "mrpc": mrpc_example,
}
# Tasks no recipe trains on: data for few-shot adaptation (`hyperexport adapt`), outside the vocabulary's source.
HELD_OUT_GENERATORS: dict[str, Callable[[random.Random, int], dict]] = {"scitail": scitail_example}


def demo_vocabulary() -> list[str]:
    """Every word the demo tasks' sources and targets can contain (the `demo-words` tokenizer's)."""
    words: set[str] = set()
    for name, generate in DEMO_GENERATORS.items():
        task, rng = get_task(name), random.Random(name)
        for index in range(2000):
            example = generate(rng, index % 2)
            words.update(task.format_source(example).split(), task.format_target(example).split())
    return sorted(words)

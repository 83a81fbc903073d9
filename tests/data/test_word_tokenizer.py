"""The demo's word-level tokenizer: T5's special ids, </s> appended, unknown words, save and reload."""

from transformers import AutoTokenizer

from hyperexport.data.demo import DEMO_GENERATORS, demo_examples, demo_vocabulary
from hyperexport.data.word_tokenizer import word_level_tokenizer
from hyperexport.model.build import DEMO_WORD_TOKENIZER, load_tokenizer
from hyperexport.tasks.registry import get_task


def test_special_ids_match_t5_and_eos_is_appended():
    tokenizer = word_level_tokenizer(["the", "fox", "0"])
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer("the fox zebra").input_ids
    assert ids[-1] == 1 and ids[2] == tokenizer.unk_token_id and len(ids) == 4
    assert tokenizer.decode(tokenizer("the fox").input_ids, skip_special_tokens=True) == "the fox"


def test_saves_and_reloads_with_auto_tokenizer(tmp_path):
    tokenizer = load_tokenizer(DEMO_WORD_TOKENIZER)
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "sentence1: the red fox sleeps sentence2: the fox is not red"
    assert reloaded(text).input_ids == tokenizer(text).input_ids


def test_demo_vocabulary_covers_every_demo_example():
    tokenizer = load_tokenizer(DEMO_WORD_TOKENIZER)
    vocabulary = set(demo_vocabulary())
    assert len(tokenizer) == len(vocabulary) + 3
    for name in DEMO_GENERATORS:
        task = get_task(name)
        for example in demo_examples(name, "validation", 50, seed=3):
            words = task.format_source(example).split() + [task.format_target(example)]
            assert set(words) <= vocabulary
            assert tokenizer.unk_token_id not in tokenizer(" ".join(words)).input_ids

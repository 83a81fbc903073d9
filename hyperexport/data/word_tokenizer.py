"""A word-level tokenizer made in code from a closed vocabulary (no files, no download).

The demo's synthetic text uses a few dozen words; one token per word keeps its sequences about five
times shorter than bytes, so a tiny random-init T5 learns the demo tasks in minutes on a CPU. The
tokenizer is a regular `PreTrainedTokenizerFast` (T5's special-token ids: pad 0, eos 1, unk 2): it saves
with `save_pretrained` and loads back with `AutoTokenizer.from_pretrained`.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2 as in T5


def word_level_tokenizer(words: Iterable[str]):
    """Whitespace-split words -> ids; unknown words -> <unk>; `</s>` appended like T5's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocabulary = {token: index for index, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words) - set(SPECIAL_TOKENS)):
        vocabulary[word] = len(vocabulary)
    core = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")

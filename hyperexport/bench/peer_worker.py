"""The processes `bench --peers` times PyTorch eager and CTranslate2 in, each alone at its own best setting.

`python -m hyperexport.bench.peer_worker FOLDER ROLE` reads `FOLDER/peers.json` (what to load):
- `convert`: writes CTranslate2 int8 and fp32 models of `FOLDER/backbone` and their sizes, then exits;
- `torch`, `ctranslate2`: load that runtime's variants, then answer one JSON line per request line on
  stdin: `{"op": "time", "variant": V, "inputs": NPZ}` -> `{"seconds": s}` (timed here, without the
  pipe); `{"op": "logprobs", "inputs": NPZ}` -> `{"path": NPZ}` (teacher-forced log-probabilities of the
  targets in NPZ); `{"op": "quit"}`.

Why processes of their own: the `hyperexport` CLI sets `OMP_WAIT_POLICY=PASSIVE` before PyTorch loads (so
that test workers sharing cores do not spin against each other), which slows PyTorch eager ~1.7x; these
run with the OpenMP default. PyTorch and CTranslate2 each bring their own OpenMP runtime, whose threads
spin after work: in one process each slows the other (PyTorch eager ran ~10x slower beside CTranslate2
here), so each has its own. The converter imports `ctranslate2` before `torch` (imported after, it shares
PyTorch's OpenMP). CTranslate2 gets the T5's token ids as tokens of a vocabulary of id names
(`IdVocabulary`), so no tokenizer is needed and every runtime reads the same ids.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

SPEC_FILE, SIZES_FILE = "peers.json", "ctranslate2-sizes.json"  # the workers' scratch files (not artifacts)
BACKBONE_DIR, HYPERNET_FILE = "backbone", "hypernet.safetensors"
CT2_THREADS = (1, 2)  # CTranslate2 runs each precision at both; the faster one is its best setting
CT2_PRECISIONS = {"int8": "int8", "fp32": "float32"}  # our name -> CTranslate2's quantization / compute type
PLAIN, HYPERNET = "torch_eager_plain", "torch_eager_hypernet"
ROLES = ("convert", "torch", "ctranslate2")


def ct2_variant(precision: str, threads: int) -> str:
    return f"ctranslate2_{precision}_t{threads}"


def ct2_dir(folder: Path, precision: str) -> Path:
    return folder / f"ctranslate2-{precision}"


class IdVocabulary:
    """What CTranslate2's T5 converter reads of a tokenizer, for a vocabulary whose tokens name their ids."""

    pad_token, eos_token, unk_token = "<pad>", "</s>", "<unk>"

    def __init__(self, size: int, pad: int, eos: int):
        self.tokens = [f"<{i}>" for i in range(size)]
        self.tokens[pad], self.tokens[eos] = self.pad_token, self.eos_token
        self.tokens[next(i for i in range(size) if i not in (pad, eos))] = self.unk_token

    def get_vocab(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    def convert_ids_to_tokens(self, ids):
        return self.tokens[ids] if isinstance(ids, int) else [self.tokens[i] for i in ids]

    def batch(self, ids) -> list[list[str]]:
        """Token ids [B, S] as lists of tokens (what CTranslate2's Translator takes)."""
        return [[self.tokens[int(i)] for i in row] for row in ids]


def main(folder: Path, role: str) -> None:
    spec = json.loads((folder / SPEC_FILE).read_text())
    if role == "convert":
        import ctranslate2  # noqa: F401  before torch, see the module doc

        _convert_all(folder, spec)
        return
    runners, logprobs = _torch(folder, spec) if role == "torch" else _ctranslate2(folder, spec)
    _serve(runners, logprobs)


def _serve(runners: dict, logprobs) -> None:
    import numpy as np

    _reply({"ready": True, "variants": sorted(runners)})
    arrays: dict[str, dict] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "quit":
            return
        inputs = arrays.setdefault(request["inputs"], dict(np.load(request["inputs"])))
        if request["op"] == "time":
            start = time.perf_counter()
            runners[request["variant"]](inputs)
            _reply({"seconds": time.perf_counter() - start})
        else:
            path = str(Path(request["inputs"]).with_suffix(f".{len(arrays)}.logprobs.npz"))
            np.savez(path, **logprobs(inputs))
            _reply({"path": path})


def _reply(message: dict) -> None:
    print(json.dumps(message), flush=True)


# ---- CTranslate2 ---------------------------------------------------------------------------------
def _vocabulary(spec: dict) -> IdVocabulary:
    return IdVocabulary(spec["vocab_size"], spec["pad_token_id"], spec["eos_token_id"])


def _convert_all(folder: Path, spec: dict) -> None:
    from ctranslate2.converters import TransformersConverter

    vocab = _vocabulary(spec)

    class IdConverter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return vocab

    sizes = {}
    for precision, kind in CT2_PRECISIONS.items():
        target = ct2_dir(folder, precision)
        IdConverter(str(folder / BACKBONE_DIR)).convert(str(target), quantization=kind, force=True)
        sizes[f"ctranslate2_{precision}"] = sum(p.stat().st_size for p in target.iterdir()) / 2**20
    (folder / SIZES_FILE).write_text(json.dumps(sizes))


def _ctranslate2(folder: Path, spec: dict):
    import ctranslate2
    import numpy as np

    vocab, new_tokens = _vocabulary(spec), spec["new_tokens"]
    translators = {ct2_variant(precision, threads): ctranslate2.Translator(
        str(ct2_dir(folder, precision)), device="cpu", compute_type=kind, intra_threads=threads, inter_threads=1)
        for precision, kind in CT2_PRECISIONS.items() for threads in CT2_THREADS}

    def runner(translator):
        return lambda inputs: translator.translate_batch(vocab.batch(inputs["input_ids"]), beam_size=1,
                                                         max_decoding_length=new_tokens, min_decoding_length=new_tokens)

    def logprobs(inputs: dict) -> dict:
        """The targets' log-probabilities [B, L] from each precision's 1-thread translator."""
        targets = inputs["targets"]
        return {f"ctranslate2_{precision}": np.array(
            [s.log_probs[:targets.shape[1]] for s in translators[ct2_variant(precision, CT2_THREADS[0])].score_batch(
                vocab.batch(inputs["input_ids"]), vocab.batch(targets))]) for precision in CT2_PRECISIONS}

    return {name: runner(t) for name, t in translators.items()}, logprobs


# ---- PyTorch eager -------------------------------------------------------------------------------
def _torch(folder: Path, spec: dict):
    import numpy as np
    import torch
    from transformers import T5ForConditionalGeneration

    torch.set_num_threads(spec["threads"])
    plain = T5ForConditionalGeneration.from_pretrained(folder / BACKBONE_DIR).eval()
    runners = {PLAIN: _torch_generate(plain, spec["new_tokens"])}
    if spec["hypernet"] is not None:
        from safetensors.torch import load_model

        from hyperexport.bench.subject import load_subject

        subject = load_subject(**spec["hypernet"])
        load_model(subject.model, folder / HYPERNET_FILE)
        task = subject.model.task_id(subject.task)
        runners[HYPERNET] = _torch_generate(subject.model.eval(), spec["new_tokens"],
                                            lambda batch: torch.full((batch,), task))

    @torch.no_grad()
    def logprobs(inputs: dict) -> dict:
        targets, start = inputs["targets"], int(inputs["decoder_start_token_id"])
        decoder_ids = np.concatenate([np.full((len(targets), 1), start), targets[:, :-1]], axis=1)
        logits = plain(input_ids=torch.from_numpy(inputs["input_ids"]),
                       attention_mask=torch.from_numpy(inputs["attention_mask"]),
                       decoder_input_ids=torch.from_numpy(decoder_ids)).logits.float()
        picked = torch.log_softmax(logits, -1).gather(-1, torch.from_numpy(targets)[..., None])[..., 0]
        return {PLAIN: picked.numpy()}

    return runners, logprobs


def _torch_generate(model, new_tokens: int, task_ids=None):
    import torch

    @torch.no_grad()
    def generate(inputs: dict):
        ids, mask = torch.from_numpy(inputs["input_ids"]), torch.from_numpy(inputs["attention_mask"])
        extra = {} if task_ids is None else {"task_ids": task_ids(ids.shape[0])}
        return model.generate(**extra, input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    return generate


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])

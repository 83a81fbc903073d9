import json

import pytest
import torch
from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

from hyperexport.backbones import PRESETS, backbone_config, backbone_param_count
from hyperexport.errors import UserError

V10_SHAPES = {  # d_model, d_kv, d_ff, layers, heads (T5 v1.0)
    "t5-small": (512, 64, 2048, 6, 8),
    "t5-base": (768, 64, 3072, 12, 12),
    "t5-large": (1024, 64, 4096, 24, 16),
}


def test_presets_are_the_packaged_files():
    assert set(PRESETS) == {"t5-small", "t5-base", "t5-large", "t5-demo", "t5-test"}


@pytest.mark.parametrize(
    ("name", "count"),
    [("t5-small", 60_506_624), ("t5-base", 222_903_552), ("t5-large", 737_668_096)],
)
def test_v10_parameter_counts_match_the_checkpoints(name, count):
    assert backbone_param_count(backbone_config(name)) == count  # PAPER 6.2 uses small and base


@pytest.mark.parametrize("name", sorted(V10_SHAPES))
def test_v10_presets(name):
    config = backbone_config(name)
    d_model, d_kv, d_ff, layers, heads = V10_SHAPES[name]
    assert (config.d_model, config.d_kv, config.d_ff, config.num_heads) == (d_model, d_kv, d_ff, heads)
    assert config.num_layers == config.num_decoder_layers == layers
    assert config.vocab_size == 32128 and config.feed_forward_proj == "relu" and not config.is_gated_act
    assert config.tie_word_embeddings and config.dropout_rate == 0.1 and config.layer_norm_epsilon == 1e-6
    assert (config.relative_attention_num_buckets, config.relative_attention_max_distance) == (32, 128)
    assert (config.decoder_start_token_id, config.pad_token_id, config.eos_token_id) == (0, 0, 1)
    assert config.is_encoder_decoder


@pytest.mark.parametrize("name", ["t5-demo", "t5-test"])
def test_tiny_presets_fit_the_byte_tokenizer(name):
    config = backbone_config(name)
    tokenizer = ByT5Tokenizer()
    assert config.vocab_size == len(tokenizer) == 384
    assert (config.pad_token_id, config.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert config.decoder_start_token_id == tokenizer.pad_token_id
    assert config.dropout_rate == 0.0


def test_demo_has_the_gated_ffn_and_test_the_plain_one():
    demo, test = backbone_config("t5-demo"), backbone_config("t5-test")
    assert demo.is_gated_act and demo.dense_act_fn == "gelu_new" and not demo.tie_word_embeddings
    assert (demo.d_model, demo.d_kv, demo.d_ff, demo.num_layers, demo.num_decoder_layers, demo.num_heads) == (
        128, 32, 256, 3, 3, 4
    )
    assert not test.is_gated_act and test.dense_act_fn == "relu" and test.tie_word_embeddings
    assert (test.d_model, test.d_kv, test.d_ff, test.num_layers, test.num_decoder_layers, test.num_heads) == (
        32, 8, 64, 2, 2, 4
    )


@pytest.mark.parametrize("name", ["t5-demo", "t5-test"])
def test_meta_count_equals_a_real_model(name):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(backbone_config(name))
    assert backbone_param_count(model.config) == sum(p.numel() for p in model.parameters())
    ids = torch.tensor([[5, 6, 7, 1]])
    logits = model(input_ids=ids, decoder_input_ids=torch.tensor([[0, 5]])).logits
    assert logits.shape == (1, 2, 384) and torch.isfinite(logits).all()


def test_config_from_a_file_or_its_folder(tmp_path):
    data = json.loads(backbone_config("t5-test").to_json_string())
    data["d_ff"] = 96
    (tmp_path / "config.json").write_text(json.dumps(data), encoding="utf-8")
    for where in (tmp_path, tmp_path / "config.json", str(tmp_path / "config.json")):
        config = backbone_config(str(where))
        assert isinstance(config, T5Config) and config.d_ff == 96


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError) as caught:
        backbone_config("t5-smal")
    message = str(caught.value)
    assert "'t5-smal'" in message and all(name in message for name in PRESETS) and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{not json", "cannot read backbone config"), ('{"model_type": "bart"}', "is not a T5 config"),
     ("[1, 2]", "is not a T5 config")],
)
def test_bad_config_files(tmp_path, text, expected):
    path = tmp_path / "config.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=expected):
        backbone_config(str(path))

"""HyperT5: shapes, init, trainable set, placement, per-example task ids, every variant."""

from __future__ import annotations

import pytest
import torch

from conftest import model_config, tiny_t5, tiny_t5_config
from hyperexport.model.generators import HYPERNET_INIT_STD
from hyperexport.model.hyper_t5 import HyperT5

VARIANTS = ("hyperformer++", "hyperformer", "hyperformer-layer", "adapters")
TASKS = ("rte", "sst2", "mrpc")


def make(variant="hyperformer++", feed_forward_proj="relu", **overrides) -> HyperT5:
    torch.manual_seed(0)
    return HyperT5(tiny_t5(feed_forward_proj), TASKS, model_config(variant, **overrides)).eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_adapter_weight_shapes_per_stack(variant):
    model = make(variant)
    weights = model.adapter_weights(torch.tensor([0, 2]))
    d, m = 32, 8  # d_model 32, reduction factor 4
    for stack, layers in (("encoder", 3), ("decoder", 2)):
        w = weights[stack]
        assert w.down_weight.shape == (2, layers, 2, m, d)
        assert w.down_bias.shape == (2, layers, 2, m)
        assert w.up_weight.shape == (2, layers, 2, d, m)
        assert w.up_bias.shape == (2, layers, 2, d)
        assert w.ln_weight.shape == w.ln_bias.shape == (2, layers, 2, d)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batched_generation_equals_one_task_at_a_time(variant):
    model = make(variant)
    together = model.adapter_weights(torch.tensor([0, 1, 2]))["decoder"].tensors()
    for task in range(3):
        alone = model.adapter_weights(torch.tensor([task]))["decoder"].tensors()
        for name, tensor in alone.items():
            torch.testing.assert_close(together[name][task], tensor[0], rtol=0, atol=1e-6)


def test_hyperformer_plus_plus_init_statistics():
    torch.manual_seed(0)
    model = HyperT5(tiny_t5(d_model=128, d_kv=32), TASKS, model_config(task_embedding_dim=64, hypernet_hidden_dim=128))
    hypernet = model.generators["encoder"]
    for name in ("down_weight", "up_weight", "ln_weight", "ln_bias"):
        generator = getattr(hypernet, name)
        assert generator.weight.std().item() == pytest.approx(HYPERNET_INIT_STD, rel=0.05)
        assert torch.count_nonzero(generator.bias) == 0
    for first in (hypernet.projector[0], hypernet.projector[2]):
        assert first.weight.std().item() == pytest.approx(HYPERNET_INIT_STD, rel=0.1)
    assert model.task_embeddings.weight.shape == (3, 64)
    assert model.task_embeddings.weight.std().item() == pytest.approx(1.0, abs=0.2)  # N(0,1), 192 draws
    assert hypernet.layer_id_embeddings.weight.std().item() == pytest.approx(1.0, abs=0.2)
    assert torch.equal(hypernet.projector_norm.weight, torch.ones(64))
    assert hypernet.projector_norm.eps == 1e-6
    assert hypernet.projector[0].in_features == 3 * 64 and hypernet.projector[2].out_features == 64


def test_encoder_and_decoder_own_hypernets_and_share_task_embeddings():
    model = make()
    encoder, decoder = model.generators["encoder"], model.generators["decoder"]
    assert encoder is not decoder
    assert encoder.layer_id_embeddings.num_embeddings == 3 and decoder.layer_id_embeddings.num_embeddings == 2
    names = [n for n, _ in model.named_parameters() if "task_embeddings" in n]
    assert names == ["task_embeddings.weight"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_adapters_task_embeddings_and_t5_layer_norms_train(variant):
    model = make(variant)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    backbone_trainable = {n for n in trainable if n.startswith("backbone.")}
    assert backbone_trainable == {n for n, _ in model.backbone.named_parameters(prefix="backbone") if "layer_norm" in n}
    # 3 encoder blocks x 2 norms + 2 decoder blocks x 3 norms + 2 final norms
    assert len(backbone_trainable) == 3 * 2 + 2 * 3 + 2
    others = trainable - backbone_trainable
    assert others and all(n.startswith(("generators.", "task_embeddings.")) for n in others)
    assert not model.backbone.lm_head.weight.requires_grad and not model.backbone.shared.weight.requires_grad


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_zero_layer_norm_generators_leave_t5_logits_unchanged(feed_forward_proj, token_batch):
    backbone = tiny_t5(feed_forward_proj)
    with torch.no_grad():
        plain = backbone(**token_batch).logits
    model = HyperT5(backbone, TASKS, model_config()).eval()
    for hypernet in model.generators.values():
        for generator in (hypernet.ln_weight, hypernet.ln_bias):
            torch.nn.init.zeros_(generator.weight), torch.nn.init.zeros_(generator.bias)
    with torch.no_grad():
        adapted = model(task_ids=torch.tensor([0, 1, 2, 0]), **token_batch).logits
    torch.testing.assert_close(adapted, plain, rtol=0, atol=0)


def test_adapters_change_the_output(token_batch):
    backbone = tiny_t5()
    with torch.no_grad():
        plain = backbone(**token_batch).logits
        adapted = HyperT5(backbone, TASKS, model_config())(task_ids=torch.zeros(4, dtype=torch.long),
                                                           **token_batch).logits
    assert (adapted - plain).abs().max() > 1e-3


def test_perturbing_one_layer_changes_outputs_from_that_layer_on(token_batch):
    model = make()
    inputs = dict(input_ids=token_batch["input_ids"], attention_mask=token_batch["attention_mask"])
    task_ids = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        before = model(task_ids=task_ids, **inputs, decoder_input_ids=token_batch["decoder_input_ids"],
                       output_hidden_states=True).encoder_hidden_states
        model.generators["encoder"].layer_id_embeddings.weight[1] += 1.0  # only layer 1's adapters change
        after = model(task_ids=task_ids, **inputs, decoder_input_ids=token_batch["decoder_input_ids"],
                      output_hidden_states=True).encoder_hidden_states
    # hidden_states[i] is the input of block i; block 1 is the first to differ
    for i in (0, 1):
        torch.testing.assert_close(after[i], before[i], rtol=0, atol=0)
    for i in (2, 3):
        assert (after[i] - before[i]).abs().max() > 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_task_batch_equals_single_task_batches(variant, token_batch):
    model = make(variant)
    with torch.no_grad():
        for generator in model.generators.values():  # make the adapters matter
            for p in generator.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        task_ids = torch.tensor([2, 0, 1, 0])
        mixed = model(task_ids=task_ids, **token_batch).logits
        for i in range(4):
            one = {k: v[i:i + 1] for k, v in token_batch.items()}
            alone = model(task_ids=task_ids[i:i + 1], **one).logits
            torch.testing.assert_close(mixed[i:i + 1], alone, rtol=0, atol=2e-5)


def test_generate_uses_each_examples_task(token_batch):
    model = make()
    with torch.no_grad():
        for p in model.generators.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    kwargs = dict(input_ids=token_batch["input_ids"], attention_mask=token_batch["attention_mask"], max_new_tokens=4)
    mixed = model.generate(task_ids=torch.tensor([0, 1, 2, 0]), **kwargs)
    for i, task in enumerate([0, 1, 2, 0]):
        alone = model.generate(task_ids=torch.tensor([task]), input_ids=kwargs["input_ids"][i:i + 1],
                               attention_mask=kwargs["attention_mask"][i:i + 1], max_new_tokens=4)
        assert mixed[i, : alone.shape[1]].tolist() == alone[0].tolist()


def test_running_without_task_ids_is_an_error(token_batch):
    model = make()
    with pytest.raises(RuntimeError, match="without task ids"):
        model.backbone(**token_batch)


def test_adapters_variant_shares_post_layer_norm_across_tasks():
    model = make("adapters")
    weights = model.adapter_weights(torch.tensor([0, 1]))["encoder"]
    assert torch.equal(weights.ln_weight[0], weights.ln_weight[1])
    assert not torch.equal(weights.down_weight[0], weights.down_weight[1])


def test_task_projector_maps_raw_embedding_to_hypernet_input():
    model = make("hyperformer", task_projector_input_dim=40)
    assert model.task_embeddings.weight.shape == (3, 40)
    assert model.task_embeddings(torch.tensor([1])).shape == (1, 16)


def test_attached_after_from_pretrained_modules_are_initialised(tmp_path):
    tiny_t5().save_pretrained(tmp_path / "t5")
    from transformers import T5ForConditionalGeneration

    backbone = T5ForConditionalGeneration.from_pretrained(tmp_path / "t5")
    model = HyperT5(backbone, TASKS, model_config())
    parameters = dict(model.named_parameters())
    assert all(p.device.type == "cpu" and torch.isfinite(p).all() for p in parameters.values())
    assert parameters["generators.encoder.down_weight.weight"].std().item() == pytest.approx(HYPERNET_INIT_STD, rel=0.1)
    assert parameters["task_embeddings.weight"].abs().sum() > 0
    assert tiny_t5_config().num_layers == model.generators["encoder"].layer_id_embeddings.num_embeddings

"""The tiny VLM: patches and positions, the embedding stage, the joint sequence order, the saliency
it reports, and that both variants learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from autoaug.errors import AutoaugInputError
from autoaug.trainers.data import to_batch
from autoaug.trainers.model import (
    TinyVLMConfig,
    build_model,
    grid_positions,
    patchify,
    soft_cross_entropy,
    unpatchify,
)
from autoaug.trainers.shapes_vqa import make_shapes_vqa
from autoaug.trainers.tokenizer import TextTokenizer


@pytest.fixture(scope="module")
def task():
    return make_shapes_vqa(seed=0, train_size=64, val_size=16, test_size=16)


@pytest.fixture(scope="module")
def tokenizer(task):
    return TextTokenizer.fit(task.texts("train"))


def _model(tokenizer, task, variant="encoder", seed=0, **options):
    # The mechanics below are checked on the 8x8 grid of 4-pixel patches they were written for (the
    # defaults moved to 8-pixel patches and width 96 for speed; the geometry is an option).
    options = {"patch_size": 4, "width": 64, **options}
    torch.manual_seed(seed)
    return build_model(tokenizer, task.num_classes, variant=variant, **options)


def _token_batch(model, task, tokenizer, count=8, device="cpu"):
    batch = to_batch(task.train[:count], tokenizer, task.num_classes, device=device)
    return model.to_token_stage(batch)


# ====================================================================== patches
def test_patchify_layout_and_positions():
    images = torch.rand(2, 3, 32, 32)
    patches, positions = patchify(images, 4)
    assert patches.shape == (2, 64, 48) and positions.shape == (2, 64, 2)
    assert positions.dtype == torch.long
    assert positions[0, 9].tolist() == [1, 1] and positions[1, 63].tolist() == [7, 7]
    assert torch.equal(positions[0], grid_positions(8, 8)[0])
    # token r*8+c holds the pixels of rows 4r..4r+3, cols 4c..4c+3, channel-major
    r, c = 2, 5
    assert torch.equal(patches[1, r * 8 + c], images[1, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(-1))
    assert torch.equal(unpatchify(patches, positions, (8, 8), 4), images)
    with pytest.raises(AutoaugInputError, match="patch_size=5"):
        patchify(images, 5)


def test_unpatchify_follows_scrambled_positions():
    images = torch.rand(1, 3, 8, 8)
    patches, positions = patchify(images, 4)
    swapped = positions[:, [1, 0, 2, 3]]
    moved = unpatchify(patches, swapped, (2, 2), 4)
    assert torch.equal(moved[..., :4, :4], images[..., :4, 4:])
    assert torch.equal(moved[..., :4, 4:], images[..., :4, :4])
    assert torch.equal(moved[..., 4:, :], images[..., 4:, :])


# ====================================================================== stages
def test_token_and_embedding_stages(task, tokenizer):
    model = _model(tokenizer, task)
    batch = _token_batch(model, task, tokenizer)
    assert batch.vision.shape == (8, 64, 48) and batch.vision_mask.all()
    assert batch.text_embedding_table.shape == (tokenizer.vocab_size, 64)
    assert not model.text_embedding_table().requires_grad
    embedded = model.embed(batch)
    assert embedded.vision.shape == (8, 64, 64)
    assert embedded.text_embeddings.shape == (8, tokenizer.max_length, 64)
    # text: token embedding + position embedding by slot
    expected = model.token_embed(batch.text_ids) + model.text_position_embed.weight[:tokenizer.max_length]
    assert torch.allclose(embedded.text_embeddings, expected)
    # a pixel-stage batch is tokenised on the way
    assert torch.equal(model.embed(to_batch(task.train[:8], tokenizer, task.num_classes)).vision, embedded.vision)


def test_positions_and_mask_embedding_drive_the_vision_embedding(task, tokenizer):
    model = _model(tokenizer, task)
    batch = _token_batch(model, task, tokenizer, count=2)
    base = model.embed(batch).vision
    # scrambling positions (content stays) changes what the model sees
    scrambled = batch.replace(vision_positions=batch.vision_positions.flip(1).clone())
    moved = model.embed(scrambled).vision
    assert not torch.allclose(moved, base)
    delta = (model.row_embed(scrambled.vision_positions[..., 0]) + model.col_embed(scrambled.vision_positions[..., 1])
             - model.row_embed(batch.vision_positions[..., 0]) - model.col_embed(batch.vision_positions[..., 1]))
    assert torch.allclose(moved - base, delta, atol=1e-6)
    # a masked patch is the learned [MASK] embedding plus its position, whatever its pixels
    masked = torch.zeros(2, 64, dtype=torch.bool)
    masked[:, 5] = True
    noisy = batch.replace(vision_masked=masked, vision=batch.vision + torch.randn_like(batch.vision))
    out = model.embed(noisy).vision
    position = model.row_embed.weight[0] + model.col_embed.weight[5]
    assert torch.allclose(out[:, 5], (model.vision_mask_embedding + position).expand(2, -1), atol=1e-6)


def test_bad_inputs_are_named(task, tokenizer):
    with pytest.raises(AutoaugInputError, match="variant"):
        TinyVLMConfig(vocab_size=10, num_classes=3, max_text_length=8, variant="seq2seq")
    with pytest.raises(AutoaugInputError, match="patch_size"):
        TinyVLMConfig(vocab_size=10, num_classes=3, max_text_length=8, patch_size=5)
    with pytest.raises(AutoaugInputError, match="heads"):
        TinyVLMConfig(vocab_size=10, num_classes=3, max_text_length=8, heads=5)  # divides no default width
    model = _model(tokenizer, task)
    batch = _token_batch(model, task, tokenizer, count=2)
    with pytest.raises(AutoaugInputError, match="embedding-stage"):
        model(batch)
    with pytest.raises(AutoaugInputError, match="already embedded"):
        model.embed(model.embed(batch))
    small = to_batch(task.train[:2], tokenizer, task.num_classes)
    with pytest.raises(AutoaugInputError, match="images must be"):
        model.to_token_stage(small.replace(images=small.images[..., :16, :16]))


# ====================================================================== the joint sequence
def test_vision_first_orders_the_sequence(task, tokenizer):
    model = _model(tokenizer, task)
    embedded = model.embed(_token_batch(model, task, tokenizer, count=4))
    order = torch.tensor([True, False, True, False])
    batch = embedded.replace(vision_first=order)
    sequence, keep, vision_slots = model.joint_sequence(batch)
    nv, nt = 64, tokenizer.max_length
    vision = batch.vision + model.type_embed.weight[0]
    text = batch.text_embeddings + model.type_embed.weight[1]
    assert sequence.shape == (4, 1 + nv + nt, 64)
    assert torch.equal(sequence[:, 0], model.start_token.expand(4, -1))
    assert torch.allclose(sequence[0, 1:1 + nv], vision[0]) and torch.allclose(sequence[0, 1 + nv:], text[0])
    assert torch.allclose(sequence[1, 1:1 + nt], text[1]) and torch.allclose(sequence[1, 1 + nt:], vision[1])
    assert torch.equal(keep[1, 1:1 + nt], batch.text_mask[1])
    assert vision_slots[0, 0] == 1 and vision_slots[1, 0] == 1 + nt
    assert torch.allclose(sequence[torch.arange(4).unsqueeze(1), vision_slots], vision)


def test_order_matters_to_the_causal_variant_only(task, tokenizer):
    for variant, should_change in (("encoder", False), ("causal", True)):
        model = _model(tokenizer, task, variant).eval()
        embedded = model.embed(_token_batch(model, task, tokenizer, count=4))
        flipped = embedded.replace(vision_first=torch.zeros(4, dtype=torch.bool))
        with torch.no_grad():
            same = torch.allclose(model(embedded).logits, model(flipped).logits, atol=1e-5)
        assert same != should_change, variant


@pytest.mark.parametrize("variant", ["encoder", "causal"])
def test_readout_equals_the_full_last_layer(task, tokenizer, variant):
    model = _model(tokenizer, task, variant).eval()
    embedded = model.embed(_token_batch(model, task, tokenizer, count=4))
    drop = torch.rand(4, 64, generator=torch.Generator().manual_seed(0)) < 0.3
    embedded = embedded.replace(vision_mask=~drop, vision_first=torch.tensor([True, False, True, False]))
    with torch.no_grad():
        sequence, keep, _ = model.joint_sequence(embedded)
        length = sequence.shape[1]
        mask = torch.triu(torch.ones(length, length, dtype=torch.bool), 1) if variant == "causal" else None
        hidden = model.encoder(sequence, mask=mask, src_key_padding_mask=~keep)
        full = model.readout(hidden, src_mask=mask, src_key_padding_mask=~keep)
        if variant == "causal":
            at = torch.tensor([int(torch.nonzero(row).max()) for row in keep])
        else:
            at = torch.zeros(4, dtype=torch.long)
        expected = model.head(model.norm(full[torch.arange(4), at]))
        assert torch.allclose(model(embedded).logits, expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["encoder", "causal"])
def test_saliency_is_a_distribution_over_kept_vision_tokens(task, tokenizer, variant):
    model = _model(tokenizer, task, variant)
    batch = _token_batch(model, task, tokenizer, count=6)
    keep = torch.rand(6, 64, generator=torch.Generator().manual_seed(1)) > 0.4
    keep[5] = False  # a sample with its whole image dropped
    batch = batch.replace(vision_mask=keep, vision_first=torch.tensor([True, False] * 3))
    output = model(model.embed(batch))
    assert output.logits.shape == (6, task.num_classes) and torch.isfinite(output.logits).all()
    saliency = output.saliency
    assert saliency.shape == (6, 64) and not saliency.requires_grad
    assert (saliency >= 0).all()
    assert (saliency[~keep] == 0).all()
    assert torch.allclose(saliency[:5].sum(1), torch.ones(5), atol=1e-5)
    assert saliency[5].sum() == 0
    assert (saliency[:5][keep[:5]] > 0).all()
    with_saliency = model.with_saliency(batch)
    assert model.training  # restored
    assert torch.allclose(with_saliency.saliency, saliency, atol=1e-6)  # dropout 0: same forward


# ====================================================================== learning
@pytest.mark.parametrize("variant", ["encoder", "causal"])
def test_both_variants_learn_a_small_batch(task, tokenizer, variant, device):
    model = _model(tokenizer, task, variant).to(device)
    batch = _token_batch(model, task, tokenizer, count=32, device=device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        output = model(model.embed(batch))
        loss = soft_cross_entropy(output.logits, batch.labels, batch.loss_weight)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p is not model.vision_mask_embedding)


def test_soft_cross_entropy():
    logits = torch.randn(5, 4)
    classes = torch.tensor([0, 3, 1, 1, 2])
    one_hot = F.one_hot(classes, 4).float()
    assert torch.allclose(soft_cross_entropy(logits, one_hot), F.cross_entropy(logits, classes))
    weight = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])
    assert torch.allclose(soft_cross_entropy(logits, one_hot, weight), F.cross_entropy(logits[:1], classes[:1]))
    mixed = 0.3 * one_hot + 0.7 * one_hot.roll(1, 0)
    expected = 0.3 * F.cross_entropy(logits, classes) + 0.7 * F.cross_entropy(logits, classes.roll(1, 0))
    assert torch.allclose(soft_cross_entropy(logits, mixed), expected)


def test_config_sizes(task, tokenizer):
    def transformer_layers(model) -> int:
        return sum(isinstance(module, torch.nn.TransformerEncoderLayer) for module in model.modules())

    model = build_model(tokenizer, task.num_classes, patch_size=8, depth=1)
    assert model.encoder is None and transformer_layers(model) == 1  # depth counts the readout layer
    assert transformer_layers(build_model(tokenizer, task.num_classes, depth=3)) == 3
    assert model.config.num_patches == 16 and model.config.patch_dim == 192
    assert model.patch_embed.in_features == 192 and model.head.out_features == task.num_classes
    assert model.token_embed.num_embeddings == tokenizer.vocab_size
    batch = to_batch(task.train[:3], tokenizer, task.num_classes)
    assert model.predict(batch).saliency.shape == (3, 16)


def test_every_registered_op_runs_through_the_model_pipeline(task, tokenizer):
    """data -> pixel ops -> tokenize -> token ops -> embed -> embedding ops -> model (docs/ARCHITECTURE.md, "The data flow")."""
    from autoaug import ops

    model = _model(tokenizer, task, "causal")
    pixel = to_batch(task.train[:8], tokenizer, task.num_classes)
    for name in ops.names():
        op = ops.get(name)
        generator = torch.Generator().manual_seed(0)
        batch = pixel
        if op.stage == "pixel":
            batch = op(batch, 0.5, generator)
        batch = model.with_saliency(model.to_token_stage(batch))
        if op.stage == "token":
            batch = op(batch, 0.5, generator)
        embedded = model.embed(batch)
        if op.stage == "embedding":
            embedded = op(embedded, 0.5, generator)
        output = model(embedded)
        assert torch.isfinite(output.logits).all(), name
        assert output.saliency.shape == (8, embedded.num_vision_tokens), name
        loss = soft_cross_entropy(output.logits, embedded.labels, embedded.loss_weight)
        assert torch.isfinite(loss), name

"""Semantics of the perturbation ops: embedding_noise, text_token_substitution, vision_patch_substitution.

Statistical checks use bounds derived from the sampling distribution at a fixed seed (4 standard
errors), computed in the test from the sample size.
"""

from __future__ import annotations

import math

import pytest
import torch

from autoaug import ops
from autoaug.batch import IGNORE_INDEX
from autoaug.errors import BatchValidationError, OpArgumentError
from autoaug.synthetic import example_batch
from conftest import generator


def _special_ids(batch) -> torch.Tensor:
    vocab = batch.vocab
    return torch.tensor(sorted({vocab.pad_id, vocab.mask_id, *vocab.special_ids}))


def _binomial_ok(count: int, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= 4 * math.sqrt(trials * p * (1 - p))


# ------------------------------------------------------------------------------------ embedding_noise
def _noisy_batch(device, **overrides):
    """An embedding batch whose token norms span three orders of magnitude, with protected tokens."""
    options = dict(batch_size=16, grid=8, text_len=32, embed_dim=64, seed=1, device=device)
    options.update(overrides)
    batch = example_batch(**options)
    g = torch.Generator().manual_seed(5)
    vision_scale = torch.exp(torch.empty(batch.vision.shape[:2]).uniform_(-3.5, 3.5, generator=g))
    text_scale = torch.exp(torch.empty(batch.text_ids.shape).uniform_(-3.5, 3.5, generator=g))
    dropped = torch.rand(batch.vision_mask.shape, generator=g) < 0.1
    masked = (torch.rand(batch.vision_mask.shape, generator=g) < 0.1) & ~dropped
    mlm = torch.full(batch.text_ids.shape, IGNORE_INDEX)
    mlm[:, 1] = 7  # position 1 is an MLM target in every sample
    return batch.replace(
        vision=batch.vision * vision_scale.unsqueeze(-1).to(device),
        text_embeddings=batch.text_embeddings * text_scale.unsqueeze(-1).to(device),
        vision_mask=batch.vision_mask & ~dropped.to(device),
        vision_masked=masked.to(device),
        mlm_labels=mlm.to(device),
    )


def _standardised_noise(before, after, sigma):
    """``(e' - e) / (σ · rms(e))`` per element, and the per-token rms."""
    rms = before.pow(2).mean(-1, keepdim=True).sqrt()
    return (after - before) / (sigma * rms), rms.squeeze(-1)


def _check_standard_normal(z: torch.Tensor) -> None:
    """Mean and variance of ``z`` match N(0, 1): |mean| ≤ 4/√n, |s² − 1| ≤ 4·√(2/(n−1))."""
    z = z.double().flatten()
    n = z.numel()
    assert abs(z.mean().item()) <= 4 / math.sqrt(n)
    assert abs(z.var().item() - 1) <= 4 * math.sqrt(2 / (n - 1))


def test_embedding_noise_is_relative_to_each_tokens_rms(device):
    op = ops.get("embedding_noise")
    batch = _noisy_batch(device)
    out = op(batch, 0.5, generator(0))
    sigma = 0.05  # magnitude 0.5 of [0, 0.10]
    vision_z, vision_rms = _standardised_noise(batch.vision, out.vision, sigma)
    text_z, text_rms = _standardised_noise(batch.text_embeddings, out.text_embeddings, sigma)
    vision_edit = batch.vision_mask & ~batch.vision_masked
    text_edit = batch.text_mask & ~batch.text_special & (batch.mlm_labels == IGNORE_INDEX)
    # Relative to the token's own scale: small and large tokens each get σ·rms, not one absolute σ.
    for z, rms, edit in ((vision_z, vision_rms, vision_edit), (text_z, text_rms, text_edit)):
        small = edit & (rms < rms[edit].median())
        _check_standard_normal(z[small])
        _check_standard_normal(z[edit & ~small])


def test_embedding_noise_leaves_protected_tokens_and_other_fields_alone(device):
    op = ops.get("embedding_noise")
    batch = _noisy_batch(device)
    out = op(batch, 1.0, generator(1))
    vision_edit = batch.vision_mask & ~batch.vision_masked
    text_edit = batch.text_mask & ~batch.text_special & (batch.mlm_labels == IGNORE_INDEX)
    assert torch.equal(out.vision[~vision_edit], batch.vision[~vision_edit])
    assert torch.equal(out.text_embeddings[~text_edit], batch.text_embeddings[~text_edit])
    assert (out.vision[vision_edit] != batch.vision[vision_edit]).any(-1).all()
    assert (out.text_embeddings[text_edit] != batch.text_embeddings[text_edit]).any(-1).all()
    for field in ("text_ids", "text_mask", "vision_mask", "vision_masked", "vision_positions", "labels"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field


def test_embedding_noise_params_are_a_seed_and_sigma_and_replay_exactly(device):
    op = ops.get("embedding_noise")
    batch = _noisy_batch(device)
    params = op.sample_params(batch, 0.3, generator(2))
    assert set(params) == {"sigma", "noise_seed", "active"}
    assert params["noise_seed"].shape == (batch.batch_size,)
    assert torch.allclose(params["sigma"], torch.full_like(params["sigma"], 0.03))
    first = op.apply(batch, params)
    assert torch.equal(first.vision, op.apply(batch, params).vision)
    other = op.apply(batch, op.sample_params(batch, 0.3, generator(3)))
    assert not torch.equal(first.vision, other.vision)


def test_embedding_noise_keeps_low_precision_dtypes():
    op = ops.get("embedding_noise")
    batch = _noisy_batch("cpu")
    batch = batch.replace(vision=batch.vision.bfloat16(), text_embeddings=batch.text_embeddings.bfloat16())
    out = op(batch, 1.0, generator(0))
    assert out.vision.dtype == torch.bfloat16 and out.text_embeddings.dtype == torch.bfloat16
    assert not torch.equal(out.vision, batch.vision)


# ----------------------------------------------------------------------------- text_token_substitution
def _cosine_ranking(table: torch.Tensor, ids: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """Brute force: for each id, all ids ordered by cosine similarity (excluded ids last)."""
    unit = torch.nn.functional.normalize(table.double(), dim=1)
    similarity = unit[ids] @ unit.T
    similarity[:, excluded] = -math.inf
    similarity[torch.arange(len(ids)), ids] = -math.inf
    return similarity.argsort(dim=1, descending=True)


def test_text_substitution_picks_one_of_the_k_nearest_uniformly(device):
    k = 4
    op = ops.get("text_token_substitution", k=k)
    batch = example_batch(batch_size=96, text_len=48, vocab_size=64, patch_dim=4, grid=2, seed=2,
                          device=device)
    params = op.sample_params(batch, 1.0, generator(0))
    out = op.apply(batch, params)
    changed = out.text_ids != batch.text_ids
    assert torch.equal(changed, params["substitute"])
    old, new = batch.text_ids[changed].cpu(), out.text_ids[changed].cpu()
    table = batch.text_embedding_table.cpu()
    ranking = _cosine_ranking(table, old, _special_ids(batch))
    rank = (ranking == new.unsqueeze(1)).float().argmax(dim=1)
    assert (rank < k).all(), "a replacement is not among the k nearest neighbours"
    assert not torch.isin(new, _special_ids(batch)).any() and not (new == old).any()
    n = len(rank)
    for r in range(k):  # each of the k neighbours is chosen with probability 1/k
        assert _binomial_ok(int((rank == r).sum()), n, 1 / k), (r, int((rank == r).sum()), n)


def test_text_substitution_rate_and_protected_positions(device):
    op = ops.get("text_token_substitution")
    batch = example_batch(batch_size=128, text_len=40, vocab_size=96, patch_dim=4, grid=2, seed=3,
                          device=device)
    mlm = torch.full_like(batch.text_ids, IGNORE_INDEX)
    mlm[:, 2] = 9
    batch = batch.replace(mlm_labels=mlm)
    out = op(batch, 0.5, generator(4))  # p = 0.15
    editable = batch.text_mask & ~batch.text_special & (mlm == IGNORE_INDEX)
    changed = out.text_ids != batch.text_ids
    assert not changed[~editable].any()
    assert _binomial_ok(int(changed.sum()), int(editable.sum()), 0.15)
    for field in ("text_mask", "text_special", "mlm_labels", "vision", "labels"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field


def test_text_substitution_uses_the_constructor_table():
    # Rows 2m and 2m+1 are near-identical, far from the rest: with k=1, id 2m becomes 2m+1 and back.
    g = torch.Generator().manual_seed(0)
    base = torch.randn(64, 32, generator=g)
    table = base.repeat_interleave(2, dim=0) + 1e-3 * torch.randn(128, 32, generator=g)
    op = ops.get("text_token_substitution", k=1, table=table)
    batch = example_batch(batch_size=32, text_len=16, vocab_size=128, patch_dim=4, grid=2, seed=4)
    batch = batch.replace(text_embedding_table=None)
    out = op(batch, 1.0, generator(1))
    changed = out.text_ids != batch.text_ids
    assert changed.any()
    assert torch.equal(out.text_ids[changed], batch.text_ids[changed] ^ 1)


def test_text_substitution_never_builds_a_vocabulary_squared_matrix():
    # 200k ids: a V x V similarity would need 160 GB; only the selected ids may be compared.
    batch = example_batch(batch_size=4, text_len=12, vocab_size=200_000, patch_dim=4, grid=2, seed=5)
    out = ops.get("text_token_substitution")(batch, 1.0, generator(0))
    changed = out.text_ids != batch.text_ids
    assert changed.any() and (out.text_ids < 200_000).all()


def test_text_substitution_stays_inside_the_vocabulary():
    table = torch.randn(500, 8, generator=torch.Generator().manual_seed(0))
    batch = example_batch(batch_size=16, text_len=12, vocab_size=64, patch_dim=4, grid=2, seed=6)
    out = ops.get("text_token_substitution", table=table)(batch, 1.0, generator(0))
    assert (out.text_ids < 64).all() and not torch.equal(out.text_ids, batch.text_ids)


@pytest.mark.parametrize("options, option", [
    ({"k": 0}, "k"), ({"k": 2.5}, "k"), ({"k": True}, "k"),
    ({"table": torch.zeros(10)}, "table"), ({"table": torch.zeros(10, 4, dtype=torch.long)}, "table"),
])
def test_text_substitution_bad_options(options, option):
    with pytest.raises(OpArgumentError, match=rf"text_token_substitution: option '{option}' must be"):
        ops.get("text_token_substitution", **options)


def test_text_substitution_without_a_table_or_with_a_short_one():
    batch = example_batch(batch_size=2, patch_dim=4, grid=2).replace(text_embedding_table=None)
    with pytest.raises(BatchValidationError, match="text_token_substitution.*text_embedding_table"):
        ops.get("text_token_substitution")(batch, 0.5, generator(0))
    short = ops.get("text_token_substitution", table=torch.randn(10, 4))
    with pytest.raises(OpArgumentError, match="table has 10 rows but the vocabulary has 128"):
        short(batch, 0.5, generator(0))


# --------------------------------------------------------------------------- vision_patch_substitution
def _patch_batch(device, batch_size=24, grid=6, seed=7):
    batch = example_batch(batch_size=batch_size, grid=grid, patch_dim=8, text_len=6, seed=seed,
                          with_saliency=True, device=device)
    g = torch.Generator().manual_seed(seed)
    dropped = torch.rand(batch.vision_mask.shape, generator=g) < 0.15
    masked = (torch.rand(batch.vision_mask.shape, generator=g) < 0.15) & ~dropped
    return batch.replace(vision_mask=~dropped.to(device), vision_masked=masked.to(device))


def test_patch_substitution_takes_the_most_similar_other_kept_patch(device):
    op = ops.get("vision_patch_substitution")
    batch = _patch_batch(device)
    params = op.sample_params(batch, 1.0, generator(0))
    out = op.apply(batch, params)
    source = params["source_sample"]
    editable = batch.vision_mask & ~batch.vision_masked
    # Brute-force cosine similarity of every patch with every patch of its source image.
    unit = torch.nn.functional.normalize(batch.vision.double(), dim=-1)
    similarity = unit @ unit[source].transpose(1, 2)
    similarity = similarity.masked_fill(~editable[source].unsqueeze(1), -math.inf)
    own = (source == torch.arange(batch.batch_size, device=device)).view(-1, 1, 1)
    eye = torch.eye(batch.vision.shape[1], dtype=torch.bool, device=device)
    similarity = similarity.masked_fill(own & eye, -math.inf)
    expected = batch.vision[source.unsqueeze(1), similarity.argmax(dim=2)]
    substituted = params["substitute"]
    assert substituted.any() and not substituted[~editable].any()
    assert torch.equal(out.vision[substituted], expected[substituted])
    assert torch.equal(out.vision[~substituted], batch.vision[~substituted])
    for field in ("vision_mask", "vision_masked", "vision_positions", "saliency", "text_ids", "labels"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field


def test_patch_substitution_rate(device):
    op = ops.get("vision_patch_substitution")
    batch = _patch_batch(device, batch_size=64, grid=8)
    out = op(batch, 0.5, generator(1))  # p = 0.15
    editable = batch.vision_mask & ~batch.vision_masked
    changed = (out.vision != batch.vision).any(-1)
    assert not changed[~editable].any()
    assert _binomial_ok(int(changed.sum()), int(editable.sum()), 0.15)


@pytest.mark.parametrize("across_probability", [0.0, 0.5, 1.0])
def test_patch_substitution_source_image(across_probability):
    op = ops.get("vision_patch_substitution", across_probability=across_probability)
    batch = _patch_batch("cpu", batch_size=400, grid=2)
    params = op.sample_params(batch, 1.0, generator(2))
    across = params["source_sample"] != torch.arange(400)
    assert _binomial_ok(int(across.sum()), 400, across_probability)
    # Within the same image the own slot is never the source.
    same = ~across.unsqueeze(1) & params["substitute"]
    assert not (params["source_slot"] == torch.arange(4))[same].any()


def test_patch_substitution_single_image_uses_another_patch_of_itself():
    op = ops.get("vision_patch_substitution", across_probability=1.0)
    batch = example_batch(batch_size=1, grid=3, patch_dim=8)
    params = op.sample_params(batch, 1.0, generator(0))
    assert torch.equal(params["source_sample"], torch.zeros(1, dtype=torch.long))
    chosen = params["substitute"][0]
    assert chosen.any() and not (params["source_slot"][0] == torch.arange(9))[chosen].any()


@pytest.mark.parametrize("value", [-0.1, 1.5, "0.5", None, True])
def test_patch_substitution_bad_option(value):
    message = r"vision_patch_substitution: option 'across_probability' must be a number in \[0, 1\]"
    with pytest.raises(OpArgumentError, match=message):
        ops.get("vision_patch_substitution", across_probability=value)


def test_embedding_noise_keeps_the_autograd_graph():
    # Embeddings come out of a model's forward and require grad; the noise is a constant shift, so
    # d e' / d e = 1 (the RMS scale is not differentiated).
    op = ops.get("embedding_noise")
    batch = _noisy_batch("cpu")
    vision = batch.vision.clone().requires_grad_(True)
    text = batch.text_embeddings.clone().requires_grad_(True)
    active = torch.arange(batch.batch_size) % 2 == 0
    out = op(batch.replace(vision=vision, text_embeddings=text), 1.0, generator(0), active=active)
    (out.vision.sum() + out.text_embeddings.sum()).backward()
    assert torch.equal(vision.grad, torch.ones_like(vision)) and torch.equal(text.grad, torch.ones_like(text))

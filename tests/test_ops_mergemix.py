"""MergeMix (autoaug/ops/mergemix.py): token merging, attention recovery, TopK paste, Gaussian lambda."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from autoaug import MultimodalBatch, ops
from autoaug.errors import BatchValidationError, OpArgumentError
from autoaug.ops import mergemix as mm
from autoaug.synthetic import example_batch
from conftest import assert_batches_equal, generator


def embedding_batch(device="cpu", batch_size=8, grid=4, embed_dim=16, **options):
    return example_batch(batch_size=batch_size, grid=grid, embed_dim=embed_dim, text_len=12,
                         device=device, **options)


def random_tokens(batch, tokens, width, seed, device):
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed)).to(device)


def brute_force_merge(tokens, size, source, num_merged):
    """Size-weighted mean of each merged token's sources, straight from the source matrix."""
    weighted = mm.source_matrix(source, num_merged) * size.unsqueeze(-1)
    merged_size = weighted.sum(1)
    merged = weighted.transpose(1, 2) @ tokens.float() / merged_size.clamp_min(1e-12).unsqueeze(-1)
    return merged, merged_size


# --------------------------------------------------------------------------------- token merging
def test_merge_count_follows_the_merge_ratio():
    assert mm.merge_count(196, 0.5) == 49
    assert mm.merge_count(196, 1.0) == 98
    assert mm.merge_count(196, 0.0) == 0
    assert mm.merge_count(15, 1.0) == 7  # at most the smaller set


@pytest.mark.parametrize("tokens", [16, 15])
def test_source_index_maps_every_patch_to_exactly_one_merged_token(device, tokens):
    x = random_tokens(5, tokens, 8, seed=1, device=device)
    keep = torch.ones(5, tokens, dtype=torch.bool, device=device)
    r = mm.merge_count(tokens, 0.5)
    source = mm.bipartite_soft_matching(x, keep, r)
    num_merged = tokens - r
    assert source.shape == (5, tokens) and source.dtype == torch.long
    matrix = mm.source_matrix(source, num_merged)
    assert matrix.shape == (5, tokens, num_merged)
    assert torch.equal(matrix.sum(-1), torch.ones(5, tokens, device=device))  # rows one-hot
    assert ((matrix == 0) | (matrix == 1)).all()
    assert (matrix.sum(1) >= 1).all()  # no empty merged token
    count_b = tokens // 2
    merged_a = source[:, ::2] >= num_merged - count_b
    assert torch.equal(merged_a.sum(1), torch.full((5,), r, device=device))
    # B tokens keep distinct slots, so exactly r merged tokens hold two or more patches' worth.
    assert torch.equal(source[:, 1::2].sort(1).values, source[:, 1::2])
    assert ((matrix.sum(1) > 1).sum(1) <= r).all()


def test_merged_edges_are_the_most_similar_ones(device):
    tokens, r = 16, 5
    x = random_tokens(4, tokens, 8, seed=2, device=device)
    keep = torch.ones(4, tokens, dtype=torch.bool, device=device)
    source = mm.bipartite_soft_matching(x, keep, r)
    unmerged = (tokens + 1) // 2 - r
    cosine = F.normalize(x[:, ::2], dim=-1) @ F.normalize(x[:, 1::2], dim=-1).transpose(1, 2)
    best, best_b = cosine.max(-1)
    merged = source[:, ::2] >= unmerged
    for b in range(4):
        assert best[b][merged[b]].min() >= best[b][~merged[b]].max()
        assert torch.equal(source[b, ::2][merged[b]], unmerged + best_b[b][merged[b]])


def test_merged_token_is_the_size_weighted_mean_of_its_sources(device):
    tokens = 16
    x = random_tokens(6, tokens, 8, seed=3, device=device)
    size = torch.rand(6, tokens, generator=torch.Generator().manual_seed(4)).to(device) + 0.5
    keep = torch.ones(6, tokens, dtype=torch.bool, device=device)
    for r in (0, 3, 8):
        source = mm.bipartite_soft_matching(x, keep, r)
        merged, merged_size = mm.merge_tokens(x, size, source, tokens - r)
        expected, expected_size = brute_force_merge(x, size, source, tokens - r)
        assert merged.shape == (6, tokens - r, 8)
        torch.testing.assert_close(merged, expected)
        torch.testing.assert_close(merged_size, expected_size)


def test_dropped_patches_do_not_attract_merges(device):
    tokens = 36
    x = random_tokens(8, tokens, 8, seed=5, device=device)
    keep = torch.rand(8, tokens, generator=torch.Generator().manual_seed(6)).to(device) > 0.3
    r = mm.merge_count(tokens, 0.5)
    source = mm.bipartite_soft_matching(x, keep, r)
    num_merged = tokens - r
    unmerged = (tokens + 1) // 2 - r
    slot_a = source[:, ::2]
    keep_a, keep_b = keep[:, ::2], keep[:, 1::2]
    merged_a = slot_a >= unmerged
    # A kept token only ever joins a kept B token.
    joined_b = (slot_a - unmerged).clamp_min(0)
    assert not (merged_a & keep_a & ~keep_b.gather(1, joined_b)).any()
    # With enough valid edges, dropped A tokens stay on their own.
    valid_edges = (keep_a.sum(1) >= r) & keep_b.any(1)
    assert not (merged_a & ~keep_a)[valid_edges].any()
    # Dropped patches weigh nothing: merged sizes count kept patches only.
    _, merged_size = mm.merge_tokens(x, keep.float(), source, num_merged)
    torch.testing.assert_close(merged_size.sum(1), keep.sum(1).float())
    rows = mm.source_matrix(source, num_merged).sum(-1)
    torch.testing.assert_close(rows, torch.ones(8, tokens, device=device))


def test_matching_is_well_formed_when_almost_everything_is_dropped(device):
    tokens = 16
    x = random_tokens(3, tokens, 8, seed=7, device=device)
    keep = torch.zeros(3, tokens, dtype=torch.bool, device=device)
    keep[:, 5] = True
    r = mm.merge_count(tokens, 1.0)
    source = mm.bipartite_soft_matching(x, keep, r)
    merged, merged_size = mm.merge_tokens(x, keep.float(), source, tokens - r)
    assert source.min() >= 0 and source.max() < tokens - r
    torch.testing.assert_close(merged_size.sum(1), torch.ones(3, device=device))
    holder = source[:, 5]
    torch.testing.assert_close(merged[torch.arange(3), holder], x[:, 5])
    scores = mm.proportional_attention_scores(merged, merged_size)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[torch.arange(3), holder], torch.ones(3, device=device))


# ------------------------------------------------------------------------- attention and recovery
def test_proportional_attention_matches_an_explicit_layer_norm_softmax(device):
    merged = random_tokens(3, 10, 32, seed=8, device=device) * 3 + 1
    size = torch.tensor([[1.0, 2, 0, 1, 1, 3, 1, 1, 1, 1]] * 3, device=device)
    scores = mm.proportional_attention_scores(merged, size)
    normed = F.layer_norm(merged, (32,))
    bias = torch.where(size > 0, size.clamp_min(1e-12).log(), torch.full_like(size, -1e9))
    attention = (normed @ normed.transpose(1, 2) / math.sqrt(32) + bias.unsqueeze(1)).softmax(-1)
    queries = (size > 0).float()
    expected = (attention * queries.unsqueeze(-1)).sum(1) / queries.sum(1, keepdim=True)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scores.sum(1), torch.ones(3, device=device))
    assert (scores[:, 2] < 1e-6).all()  # an empty merged token receives no attention


def test_recovered_attention_gives_each_patch_its_merged_tokens_score(device):
    tokens = 16
    x = random_tokens(4, tokens, 8, seed=9, device=device)
    keep = torch.ones(4, tokens, dtype=torch.bool, device=device)
    r = mm.merge_count(tokens, 1.0)
    source = mm.bipartite_soft_matching(x, keep, r)
    merged, size = mm.merge_tokens(x, keep.float(), source, tokens - r)
    scores = mm.proportional_attention_scores(merged, size)
    recovered = mm.recover_attention(scores, source)
    assert recovered.shape == (4, tokens)
    for b in range(4):
        for n in range(tokens):
            assert recovered[b, n] == scores[b, source[b, n]]
    # Patches merged together share one value.
    same = source.unsqueeze(2) == source.unsqueeze(1)
    assert (same.sum((1, 2)) > tokens).all()  # some patches were merged
    assert torch.equal((recovered.unsqueeze(2) == recovered.unsqueeze(1)) | ~same, torch.ones_like(same))


def test_saliency_replaces_attention_pooled_into_merged_tokens(device):
    batch = embedding_batch(device, with_saliency=True)
    scores, r = mm.merged_patch_scores(batch, 0.5)
    source = mm.bipartite_soft_matching(batch.vision, batch.vision_mask, r)
    matrix = mm.source_matrix(source, batch.num_vision_tokens - r)
    group_mean = (matrix.transpose(1, 2) @ batch.saliency.unsqueeze(-1)).squeeze(-1) / matrix.sum(1)
    torch.testing.assert_close(scores, group_mean.gather(1, source))


def test_topk_mask_takes_the_k_best_candidates(device):
    scores = torch.rand(6, 20, generator=torch.Generator().manual_seed(10)).to(device)
    candidates = torch.rand(6, 20, generator=torch.Generator().manual_seed(11)).to(device) > 0.4
    candidates[0] = False
    candidates[0, :3] = True  # fewer candidates than k
    chosen = mm.topk_mask(scores, 5, candidates)
    assert torch.equal(chosen.sum(1), candidates.sum(1).clamp_max(5))
    assert not (chosen & ~candidates).any()
    for b in range(6):
        left_out = candidates[b] & ~chosen[b]
        if left_out.any():
            assert scores[b][chosen[b]].min() >= scores[b][left_out].max()


# ---------------------------------------------------------------------------------------- the op
def test_op_pastes_the_partners_top_attended_patches(device):
    batch = embedding_batch(device, with_alignment=True)
    op = ops.get("mergemix")
    params = op.sample_params(batch, 1.0, generator(0))
    partner, paste = params["partner"], params["paste"]
    tokens = batch.num_vision_tokens
    k = round(0.5 * tokens)

    # Steps 1-4 through the public pieces.
    r = mm.merge_count(tokens, 0.5)
    source = mm.bipartite_soft_matching(batch.vision, batch.vision_mask, r)
    merged, size = mm.merge_tokens(batch.vision, batch.vision_mask.float(), source, tokens - r)
    recovered = mm.recover_attention(mm.proportional_attention_scores(merged, size), source)
    expected = mm.topk_mask(recovered[partner], k, batch.vision_mask[partner])
    assert torch.equal(paste, expected)
    assert torch.equal(paste.sum(1), torch.full((batch.batch_size,), k, device=device))
    assert (partner != torch.arange(batch.batch_size, device=device)).all()

    out = op.apply(batch, params)
    cell = paste.unsqueeze(-1)
    assert torch.equal(out.vision, torch.where(cell, batch.vision[partner], batch.vision))
    for field in ("vision_mask", "vision_masked", "vision_positions"):
        before = getattr(batch, field)
        where = paste if before.dim() == 2 else cell
        assert torch.equal(getattr(out, field), torch.where(where, before[partner], before)), field
    assert torch.equal(out.alignment, batch.alignment & ~paste.unsqueeze(1))
    for field in ("text_ids", "text_mask", "text_special", "text_embeddings"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field
    assert out.augmented.all()


def test_dropped_partner_patches_are_never_pasted(device):
    batch = embedding_batch(device)
    keep = torch.zeros_like(batch.vision_mask)
    keep[:, [1, 6, 11]] = True
    batch = batch.replace(vision_mask=keep)
    op = ops.get("mergemix")
    params = op.sample_params(batch, 1.0, generator(1))
    paste = params["paste"]
    assert torch.equal(paste.sum(1), torch.full((batch.batch_size,), 3, device=device))
    assert not (paste & ~keep[params["partner"]]).any()
    out = op.apply(batch, params)
    assert torch.equal(out.vision_mask, keep)  # kept slots received kept patches
    # mu is the ratio actually pasted (3 / 16, not k / N): two spreads, same draw, solve for mu.
    wider = ops.get("mergemix", merge_ratio=1.0).sample_params(batch, 1.0, generator(1))
    narrow_sigma, wide_sigma = 4 / 16, 8 / 16
    mu = (wide_sigma * params["lambda_raw"] - narrow_sigma * wider["lambda_raw"]) \
        / (wide_sigma - narrow_sigma)
    torch.testing.assert_close(mu, torch.full((8,), 3 / 16, device=device))


def test_labels_mix_with_the_partners_share(device):
    batch = embedding_batch(device, num_classes=5)
    op = ops.get("mergemix")
    params = op.sample_params(batch, 0.8, generator(2))
    out = op.apply(batch, params)
    lam = params["lam"].unsqueeze(1)
    expected = (1 - lam) * batch.labels + lam * batch.labels[params["partner"]]
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(out.labels.sum(1), torch.ones(batch.batch_size, device=device))
    assert ((params["lam"] >= 0) & (params["lam"] <= 1)).all()
    # Batch min-max normalisation: the lowest draw gets 0, the highest just under 1.
    raw = params["lambda_raw"]
    assert params["lam"][raw.argmin()] == 0
    spread = raw.max() - raw.min()
    torch.testing.assert_close(params["lam"].max(), spread / (spread + 1e-5))


def test_gaussian_lambda_statistics_match_the_paper():
    """Seed 002: lam_raw ~ N(mu, sigma), mu = mask ratio applied, sigma = merge ratio (r / N)."""
    n, tokens = 4000, 16
    batch = embedding_batch(batch_size=n, embed_dim=8)
    for merge_ratio in (0.5, 1.0):
        op = ops.get("mergemix", merge_ratio=merge_ratio)
        params = op.sample_params(batch, 1.0, generator(3))
        mu = round(0.5 * tokens) / tokens
        sigma = mm.merge_count(tokens, merge_ratio) / tokens
        raw = params["lambda_raw"].double()
        assert abs(raw.mean().item() - mu) <= 4 * sigma / math.sqrt(n)
        assert abs(raw.std().item() - sigma) <= 4 * sigma / math.sqrt(2 * (n - 1))
        lam = params["lam"]
        assert ((lam >= 0) & (lam <= 1)).all() and (lam == 0).sum() == 1
    # No merging: no spread, every draw is mu and the normalised share is 0.
    params = ops.get("mergemix", merge_ratio=0.0).sample_params(batch, 1.0, generator(3))
    assert torch.equal(params["lambda_raw"], torch.full((n,), 0.5))
    assert torch.equal(params["lam"], torch.zeros(n))


def test_area_mode_uses_the_pasted_fraction(device):
    batch = embedding_batch(device)
    op = ops.get("mergemix", lambda_mode="area")
    params = op.sample_params(batch, 0.6, generator(4))
    tokens = batch.num_vision_tokens
    torch.testing.assert_close(params["lam"], params["paste"].sum(1).float() / tokens)
    assert torch.equal(params["paste"].sum(1), torch.full((8,), round(0.6 * 0.5 * tokens), device=device))


def test_a_single_sample_has_no_partner_and_is_left_alone(device):
    batch = embedding_batch(device, batch_size=1)
    op = ops.get("mergemix")
    params = op.sample_params(batch, 1.0, generator(5))
    assert not params["active"].any()
    assert_batches_equal(op.apply(batch, params), batch)


def test_bad_options_are_clear_errors():
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(OpArgumentError, match=r"mergemix: merge_ratio must be a number in \[0, 1\]"):
            ops.get("mergemix", merge_ratio=bad)
    with pytest.raises(OpArgumentError, match="mergemix: lambda_mode must be one of gaussian, area"):
        ops.get("mergemix", lambda_mode="beta")
    for bad in (0.0, -1e-5, float("inf"), None):
        with pytest.raises(OpArgumentError, match="mergemix: tau must be a finite number > 0"):
            ops.get("mergemix", tau=bad)


def test_needs_vision_tokens():
    batch = example_batch(batch_size=4, image_size=16)
    batch = MultimodalBatch(text_ids=batch.text_ids, labels=batch.labels, images=batch.images)
    with pytest.raises(BatchValidationError, match="op 'mergemix' needs MultimodalBatch.vision"):
        ops.get("mergemix").sample_params(batch, 0.5, generator(0))

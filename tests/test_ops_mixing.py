"""Semantics of the mixing ops: token_mixup and token_cutmix (and the benchmark baselines).

λ statistics are checked against the Beta distribution with bounds of 4 standard errors computed
from the sample size; the CutMix λ is checked exactly against the patches actually replaced.
"""

from __future__ import annotations

import math

import pytest
import torch

from autoaug import ops
from autoaug.ops.mixing import folded_beta, mix_elementwise_timm_style, mix_python_loop
from autoaug.synthetic import example_batch
from conftest import generator


def _distinct_labels(batch):
    """One class per sample (C = B), so a mixed row reveals λ: ``labels[i, i] = λ_i``."""
    size = batch.batch_size
    return batch.replace(labels=torch.eye(size, device=batch.device))


# --------------------------------------------------------------------------------------- token_mixup
def test_mixup_blends_embeddings_and_labels_exactly(device):
    op = ops.get("token_mixup")
    batch = _distinct_labels(example_batch(batch_size=7, grid=3, text_len=8, embed_dim=16, device=device))
    params = op.sample_params(batch, 1.0, generator(0))
    out = op.apply(batch, params)
    lam, partner = params["lam"], params["partner"]
    assert (partner != torch.arange(7, device=device)).all()
    assert ((lam >= 0.5) & (lam <= 1)).all()
    weight = lam.view(-1, 1, 1)
    assert torch.allclose(out.vision, weight * batch.vision + (1 - weight) * batch.vision[partner], atol=1e-6)
    assert torch.allclose(out.text_embeddings,
                          weight * batch.text_embeddings + (1 - weight) * batch.text_embeddings[partner],
                          atol=1e-6)
    expected = lam.unsqueeze(1) * batch.labels + (1 - lam.unsqueeze(1)) * batch.labels[partner]
    assert torch.allclose(out.labels, expected, atol=1e-6)
    assert torch.allclose(out.labels.sum(1), torch.ones(7, device=device), atol=1e-6)
    for field in ("text_ids", "text_mask", "text_special", "vision_mask", "vision_positions",
                  "vision_masked"):
        assert torch.equal(getattr(out, field), getattr(batch, field)), field


def _beta_cdf(alpha: float, x: float) -> float:
    """P(Beta(α, α) ≤ x), x ≤ ½: numerical integration in log space (t = log u) from u = e⁻⁷⁰⁰, plus
    the mass below it in closed form (there (1 − u)^(α−1) = 1 to float64 precision, so it is
    e^(−700α) / α); for tiny α most of the mass lies below any float64."""
    start = -700.0
    t = torch.linspace(start, math.log(x), 200_001, dtype=torch.float64)
    log_density = alpha * t + (alpha - 1) * torch.log1p(-torch.exp(t))  # u^α (1−u)^(α−1): d u = u dt
    mass = float(torch.trapezoid(torch.exp(log_density), t)) + math.exp(alpha * start) / alpha
    return mass * math.exp(math.lgamma(2 * alpha) - 2 * math.lgamma(alpha))


@pytest.mark.parametrize("magnitude", [1.0, 0.4, 0.01, 1e-4])
def test_mixup_lambda_follows_the_folded_beta(magnitude):
    alpha, n = magnitude, 20_000  # magnitude m -> alpha = m on [0, 1.0]
    op = ops.get("token_mixup")
    batch = example_batch(batch_size=n, grid=1, patch_dim=1, text_len=3, embed_dim=1, num_classes=2)
    lam = op.sample_params(batch, magnitude, generator(1))["lam"].double()
    assert ((lam >= 0.5) & (lam <= 1)).all()
    # P(max(λ, 1−λ) ≤ x) = 1 − 2·P(λ ≤ 1 − x) for the symmetric Beta.
    for x in (0.6, 0.75, 0.9, 0.99):
        p = 1 - 2 * _beta_cdf(alpha, 1 - x)
        count = int((lam <= x).sum())
        assert abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1, (x, count, n * p)


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_mixup_lambda_moments_match_the_beta(alpha):
    # E[(λ' − ½)²] of the folded draw is Var(λ) of Beta(α, α) = 1 / (4(2α + 1)); the variance of
    # (λ − ½)² is σ⁴ · 4α / (2α + 3) (from the Beta's fourth central moment).
    n = 20_000
    lam = folded_beta(generator(2), alpha, n, torch.device("cpu")).double()
    variance = 1 / (4 * (2 * alpha + 1))
    spread = math.sqrt(variance**2 * 4 * alpha / (2 * alpha + 3) / n)
    assert abs(((lam - 0.5) ** 2).mean().item() - variance) <= 4 * spread
    if alpha == 1.0:  # uniform on [½, 1]: mean ¾, variance 1/48
        assert abs(lam.mean().item() - 0.75) <= 4 * math.sqrt(1 / 48 / n)


def test_mixup_single_sample_mixes_with_itself():
    op = ops.get("token_mixup")
    batch = example_batch(batch_size=1, grid=2, text_len=5, embed_dim=8)
    out = op(batch, 1.0, generator(0))
    assert torch.allclose(out.vision, batch.vision) and torch.allclose(out.labels, batch.labels)


def test_baselines_match_the_vectorised_blend():
    tokens = torch.randn(5, 6, 4)
    labels = torch.eye(5)
    lam = torch.tensor([1.0, 0.9, 0.75, 0.5, 0.6])
    partner = torch.tensor([1, 2, 3, 4, 0])
    snapshot = tokens.clone()
    weight = lam.view(-1, 1, 1)
    expected = weight * tokens + (1 - weight) * tokens[partner]
    expected_labels = lam.unsqueeze(1) * labels + (1 - lam.unsqueeze(1)) * labels[partner]
    for baseline in (mix_elementwise_timm_style, mix_python_loop):
        mixed, mixed_labels = baseline(tokens, labels, lam, partner)
        assert torch.allclose(mixed, expected, atol=1e-6) and torch.allclose(mixed_labels, expected_labels)
        assert torch.equal(tokens, snapshot)


# --------------------------------------------------------------------------------------- token_cutmix
def _shuffled_slots(batch, seed=0):
    """The same batch with every sample's slots in a different random order (content and positions
    move together), so the cutmix cell → slot map is exercised on a non-raster layout."""
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(batch.vision_mask.shape, generator=g).argsort(dim=1).to(batch.device)
    rows = torch.arange(batch.batch_size, device=batch.device).unsqueeze(1)
    return batch.replace(
        vision=batch.vision[rows, order], vision_positions=batch.vision_positions[rows, order],
        vision_mask=batch.vision_mask[rows, order], saliency=batch.saliency[rows, order],
    )


def _cell_lookup(batch):
    """``[B, rows, cols]`` slot of each grid cell."""
    rows, cols = batch.grid_shape
    lookup = torch.empty(batch.batch_size, rows, cols, dtype=torch.long, device=batch.device)
    sample = torch.arange(batch.batch_size, device=batch.device).unsqueeze(1).expand_as(batch.vision_mask)
    slots = torch.arange(batch.vision_mask.shape[1], device=batch.device).expand_as(batch.vision_mask)
    lookup[sample, batch.vision_positions[..., 0], batch.vision_positions[..., 1]] = slots
    return lookup


def test_cutmix_pastes_the_partners_rectangle_and_lambda_is_the_kept_share(device):
    op = ops.get("token_cutmix")
    batch = example_batch(batch_size=9, grid=7, patch_dim=6, with_saliency=True, device=device)
    g = torch.Generator().manual_seed(3)
    batch = batch.replace(vision_mask=~(torch.rand(9, 49, generator=g) < 0.2).to(device),
                          vision_masked=(torch.rand(9, 49, generator=g) < 0.2).to(device))
    batch = _distinct_labels(_shuffled_slots(batch))
    params = op.sample_params(batch, 1.0, generator(4))
    out = op.apply(batch, params)
    partner, active = params["partner"], params["active"]
    lookup = _cell_lookup(batch)
    changed = (out.vision != batch.vision).any(-1)
    assert changed.any()
    for i in range(batch.batch_size):  # a readable per-sample check of a batched op
        cells = batch.vision_positions[i][changed[i]]
        if len(cells):
            top, left = cells.amin(0).tolist()
            bottom, right = cells.amax(0).tolist()
            assert len(cells) == (bottom - top + 1) * (right - left + 1), "not a full rectangle"
            assert params["box"][i].tolist()[:2] == [top, left]
        box_top, box_left, height, width = params["box"][i].tolist()
        rows, cols = batch.vision_positions[i].unbind(-1)
        inside = (rows >= box_top) & (rows < box_top + height) \
            & (cols >= box_left) & (cols < box_left + width)
        assert torch.equal(changed[i], inside & bool(active[i]))
        j = int(partner[i])
        source = lookup[j, rows, cols]
        for field in ("vision", "vision_mask", "vision_masked", "saliency"):
            before, after, theirs = getattr(batch, field)[i], getattr(out, field)[i], getattr(batch, field)[j]
            assert torch.equal(after[inside], theirs[source[inside]]), field
            assert torch.equal(after[~inside], before[~inside]), field
        lam = 1 - int(inside.sum()) / 49
        assert math.isclose(float(out.labels[i, i]), lam, abs_tol=1e-6)
        assert math.isclose(float(out.labels[i, j]), 1 - lam, abs_tol=1e-6)
    assert torch.equal(out.vision_positions, batch.vision_positions)
    assert torch.allclose(out.labels.sum(1), torch.ones(9, device=device), atol=1e-6)


def test_cutmix_box_size_follows_the_strength():
    op = ops.get("token_cutmix")
    batch = example_batch(batch_size=2000, grid=14, patch_dim=1, text_len=3)
    box = op.sample_params(batch, 0.6, generator(5))["box"].double()  # strength 0.3
    height, width = box[:, 2], box[:, 3]
    assert ((box[:, 0] + height <= 14) & (box[:, 1] + width <= 14)).all()
    # Before rounding the sides are √(A·r) and √(A/r) with A ~ U(0, 0.3·196) cells and r in [½, 2];
    # rounding moves each by at most ½, so |height·width − A| ≤ ½(height + width) + ¾.
    area, slack = height * width, 0.5 * (height + width) + 0.75
    assert (area <= 0.3 * 196 + slack).all()
    standard_error = 0.3 * 196 / math.sqrt(12 * len(area))
    assert abs(area.mean().item() - 0.15 * 196) <= slack.mean().item() + 4 * standard_error
    # height ≤ round(2·(width + ½)) ≤ 2·width + 1, so the rounded aspect ratio stays within 3.
    nonempty = area > 0
    assert ((height[nonempty] / width[nonempty] <= 3) & (width[nonempty] / height[nonempty] <= 3)).all()


def test_cutmix_works_on_video_frame_by_frame():
    op = ops.get("token_cutmix")
    batch = _distinct_labels(example_batch(batch_size=3, grid=4, patch_dim=5, num_frames=2))
    params = op.sample_params(batch, 1.0, generator(6))
    out = op.apply(batch, params)
    partner = params["partner"]
    changed = (out.vision != batch.vision).any(-1)
    assert torch.equal(changed[:, :16], changed[:, 16:]), "the same cells are cut in every frame"
    expected = batch.vision[partner]  # same raster layout: the partner's slot of a cell is the same slot
    assert torch.equal(out.vision[changed], expected[changed])
    kept = 1 - changed.sum(1).double() / 32
    assert torch.allclose(out.labels[torch.arange(3), torch.arange(3)].double(), kept, atol=1e-6)


def test_cutmix_single_sample_pairs_with_itself():
    op = ops.get("token_cutmix")
    batch = example_batch(batch_size=1, grid=4, patch_dim=5)
    params = op.sample_params(batch, 1.0, generator(0))
    out = op.apply(batch, params)
    assert torch.equal(params["partner"], torch.zeros(1, dtype=torch.long))
    assert torch.equal(out.vision, batch.vision) and torch.allclose(out.labels, batch.labels)


def test_cutmix_cells_missing_from_the_partner_are_kept():
    # Sample 0 covers grid rows 0-1, sample 1 rows 2-3: no cell in common, so nothing is pasted.
    op = ops.get("token_cutmix")
    batch = _distinct_labels(example_batch(batch_size=2, grid=4, patch_dim=3))
    positions = batch.vision_positions.clone()
    positions[:, :, 0] = positions[:, :, 0] // 2 + torch.tensor([[0], [2]])
    batch = batch.replace(vision_positions=positions)
    out = op(batch, 1.0, generator(0))
    assert torch.equal(out.vision, batch.vision) and torch.allclose(out.labels, batch.labels)


def test_mixup_keeps_the_autograd_graph():
    op = ops.get("token_mixup")
    batch = example_batch(batch_size=5, grid=2, text_len=6, embed_dim=8)
    vision = batch.vision.clone().requires_grad_(True)
    active = torch.tensor([True, False, True, True, False])
    params = op.sample_params(batch, 1.0, generator(0), active=active)
    out = op.apply(batch.replace(vision=vision, text_embeddings=batch.text_embeddings.requires_grad_(True)),
                   params)
    out.vision.sum().backward()
    # d/dx_k of Σ out = its own weight (λ_k, or 1 when inactive) + Σ over active i with partner k of 1 − λ_i.
    lam = torch.where(active, params["lam"], torch.ones(5))
    share = torch.zeros(5).index_add_(0, params["partner"], torch.where(active, 1 - params["lam"], 0.0))
    assert torch.allclose(vision.grad[:, 0, 0], lam + share)

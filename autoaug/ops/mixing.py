"""Mixing ops: blend two samples' tokens and their labels by the same proportion.

docs/GUIDELINES.md, "Mixing" (mixup, Zhang et al. 2018; CutMix, Yun et al. 2019):
``e_mix = λ e₁ + (1 − λ) e₂`` at token level with λ ~ Beta(α, α), and the token form of CutMix (a
block of patch tokens from another sample, λ = the area kept). Each sample is paired with a
uniformly drawn *other* sample (`sampling.random_partners`: odd batch sizes work, B = 1 pairs a
sample with itself) and keeps the larger share; labels are mixed with the same λ, so they stay a
distribution.

Also here, for ``benchmarks/ops.py`` only (not registered): `mix_elementwise_timm_style` and
`mix_python_loop`, the per-sample-loop baselines the vectorised `token_mixup` is compared with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params, where_active
from autoaug.ops.perturbation import out_buffer
from autoaug.ops.registry import register


def folded_beta(generator: torch.Generator, alpha: float, size: int, device: torch.device) -> Tensor:
    """``max(λ, 1 − λ)`` for λ ~ Beta(α, α), float32 ``[size]``, exact even for tiny α.

    torch's Beta sampler (behind `sampling.beta`) underflows below α ≈ 0.003 and returns λ ≈ 0.5
    instead of λ ∈ {0, 1}. So λ is drawn in log-odds: with G ~ Gamma(α+1) and U ~ U(0, 1),
    ``G · U^(1/α) ~ Gamma(α)``, hence ``logit λ = logit Y + (log U₁ − log U₂) / α`` with
    Y ~ Beta(α+1, α+1) (from `sampling.beta`, well-conditioned) and U₁, U₂ uniform.
    """
    inner = sampling.beta(generator, alpha + 1.0, (size,), device).double()
    uniforms = sampling.uniform(generator, (2, size), device).double()
    log_u = torch.log1p(-uniforms)  # log of a uniform on (0, 1]: finite
    log_odds = torch.logit(inner) + (log_u[0] - log_u[1]) / alpha
    return torch.sigmoid(log_odds.abs()).float()


def _mix_labels(labels: Tensor, partner: Tensor, lam: Tensor, active: Tensor) -> Tensor:
    """``λ y_i + (1 − λ) y_j`` for active samples, the labels unchanged elsewhere."""
    mixed = torch.lerp(labels.index_select(0, partner), labels, lam.to(labels.dtype).unsqueeze(1))
    return where_active(active, mixed, labels)


def _blend(tokens: Tensor, partner: Tensor, lam: Tensor, active: Tensor) -> Tensor:
    """``λ x_i + (1 − λ) x_j`` position-wise for active samples, the tokens unchanged elsewhere."""
    mixed = tokens.index_select(0, partner)
    shape = (-1, *([1] * (tokens.dim() - 1)))
    mixed.lerp_(tokens, lam.to(tokens.dtype).view(shape))
    return torch.where(active.view(shape), mixed, tokens, out=out_buffer(mixed))  # one allocation


@register
class TokenMixup(Op):
    """Blend each sample's vision and text embeddings with a partner's, position-wise, and mix labels.

    λ ~ Beta(α, α) folded to ``max(λ, 1 − λ)`` (the sample keeps the larger share); vision and text
    embeddings become ``λ x_i + (1 − λ) x_j`` position by position (the partner's padding and dropped
    slots included, as in token-level mixup); masks, ids, positions and every other field stay the
    sample's own; labels become ``λ y_i + (1 − λ) y_j``. Magnitude → α in [0, 1.0]: α → 0 gives
    λ → 1 (the identity), α = 1 a uniform λ, the original mixup used α = 0.2–0.4 (docs/GUIDELINES.md: "λ
    typically sampled from Beta(α, α)").

    Params: ``partner`` [B] long, ``lam`` [B] float (in [0.5, 1]).
    """

    name = "token_mixup"
    stage = "embedding"
    modality = "cross"
    parameter = "Beta(alpha, alpha) concentration alpha"
    default_range = (0.0, 1.0)
    mixes_labels = True

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size, device = batch.batch_size, batch.device
        partner = sampling.random_partners(generator, size, device)
        if strength > 0:
            lam = folded_beta(generator, strength, size, device)
        else:
            lam = torch.ones(size, device=device)
        return {"partner": partner, "lam": lam}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        partner, lam = params["partner"], params["lam"]
        return batch.replace(
            vision=_blend(batch.vision, partner, lam, active),
            text_embeddings=_blend(batch.text_embeddings, partner, lam, active),
            labels=_mix_labels(batch.labels, partner, lam, active),
        )


@register
class TokenCutmix(Op):
    """Replace a rectangle of patch tokens by the partner's tokens at the same grid cells; mix labels.

    Per sample one box of grid cells: area fraction ``strength · u`` (u ~ U(0, 1)) of the sample's
    grid (read from ``vision_positions``), aspect ratio (height/width) log-uniform in [1/2, 2], sides
    rounded and clipped to the grid, placed uniformly where it fits. Every slot whose cell lies in
    the box takes the partner's token at the same cell (same frame for video): ``vision``,
    ``vision_mask``, ``vision_masked`` and ``saliency``; positions stay. The partner's slot of a cell
    comes from a cell → slot inverse map built per sample with a scatter, so any slot order works;
    a cell the partner lacks is not replaced. λ = the kept share, ``1 − replaced slots / Nv``
    (``1 − box cells / grid cells`` on a full grid), exactly; labels become ``λ y_i + (1 − λ) y_j``.
    Magnitude → strength in [0, 0.5], the largest cut area fraction (a mean of strength/2: at most
    half the image is pasted, so the sample keeps the larger share, as in `token_mixup`).

    Params: ``partner`` [B] long, ``box`` [B, 4] long (top row, left column, height, width; height
    and width 0 where the drawn box is empty, then the sample is not augmented).
    """

    name = "token_cutmix"
    stage = "token"
    modality = "vision"
    parameter = "largest cut area fraction"
    default_range = (0.0, 0.5)
    mixes_labels = True

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size, device = batch.batch_size, batch.device
        partner = sampling.random_partners(generator, size, device)
        draws = sampling.uniform(generator, (4, size), device)
        extent = (batch.vision_positions.amax(dim=1) + 1).to(torch.float32)  # [B, 2] rows, cols
        rows, cols = extent.unbind(1)
        area = strength * draws[0] * rows * cols
        aspect = torch.exp((draws[1] * 2.0 - 1.0) * math.log(2.0))  # height / width in [1/2, 2]
        height = torch.minimum(torch.round(torch.sqrt(area * aspect)), rows)
        width = torch.minimum(torch.round(torch.sqrt(area / aspect)), cols)
        empty = (height == 0) | (width == 0)
        height, width = height.masked_fill(empty, 0), width.masked_fill(empty, 0)
        top = torch.floor(draws[2] * (rows - height + 1)).clamp(max=rows - height)
        left = torch.floor(draws[3] * (cols - width + 1)).clamp(max=cols - width)
        box = torch.stack((top, left, height, width), dim=1).long()
        return {"partner": partner, "box": box, "applies": ~empty}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        partner, box = params["partner"], params["box"]
        size, tokens = batch.batch_size, batch.num_vision_tokens
        positions = batch.vision_positions.long()
        rows, cols = batch.grid_shape
        frame = torch.arange(tokens, device=batch.device) // batch.patches_per_frame
        cell = frame * (rows * cols) + positions[..., 0] * cols + positions[..., 1]  # [B, Nv]
        slots = torch.arange(tokens, device=batch.device).expand(size, -1)
        slot_of_cell = torch.full((size, batch.num_frames * rows * cols), -1, dtype=torch.long,
                                  device=batch.device)
        slot_of_cell.scatter_reduce_(1, cell, slots, reduce="amax")
        source = slot_of_cell.index_select(0, partner).gather(1, cell)  # partner's slot, -1 if none

        top, left, height, width = (value.unsqueeze(1) for value in box.unbind(1))
        row, col = positions[..., 0], positions[..., 1]
        inside = (row >= top) & (row < top + height) & (col >= left) & (col < left + width)
        take = inside & (source >= 0) & active.unsqueeze(1)
        lam = 1.0 - take.sum(dim=1).to(torch.float64) / tokens

        source_sample, source_slot = partner.unsqueeze(1), source.clamp(min=0)

        def paste(field: Tensor) -> Tensor:
            incoming = field[source_sample, source_slot]
            condition = take.view(*take.shape, *([1] * (field.dim() - 2)))
            return torch.where(condition, incoming, field, out=out_buffer(incoming))

        return batch.replace(
            vision=paste(batch.vision),
            vision_mask=paste(batch.vision_mask),
            vision_masked=paste(batch.vision_masked),
            saliency=None if batch.saliency is None else paste(batch.saliency),
            labels=_mix_labels(batch.labels, partner, lam, active),
        )


# ----------------------------------------------------------------------------- benchmark baselines
def mix_elementwise_timm_style(tokens: Tensor, labels: Tensor, lam: Tensor,
                               partner: Tensor) -> tuple[Tensor, Tensor]:
    """Baseline (not an op): per-sample mixup as timm's ``Mixup(mode='elem')`` does it.

    timm keeps λ on the host and loops over samples in Python, writing ``x[i] = x[i]·λ_i +
    x_orig[j]·(1 − λ_i)`` into a copy (timm pairs ``j = B − 1 − i``; here ``partner[i]``), then mixes
    the labels in one vectorised step. ``tokens`` [B, N, D], ``labels`` [B, C], ``lam`` [B],
    ``partner`` [B] long. Returns ``(mixed tokens, mixed labels)``; the inputs are not modified.
    """
    lam_host, partner_host = lam.tolist(), partner.tolist()
    mixed = tokens.clone()
    for i, (weight, j) in enumerate(zip(lam_host, partner_host)):
        if weight != 1.0:
            mixed[i] = tokens[i] * weight + tokens[j] * (1.0 - weight)
    weights = lam.to(labels.dtype).unsqueeze(1)
    return mixed, labels * weights + labels[partner] * (1.0 - weights)


def mix_python_loop(tokens: Tensor, labels: Tensor, lam: Tensor, partner: Tensor) -> tuple[Tensor, Tensor]:
    """Baseline (not an op): the same mixup written as plain Python loops over samples and tokens.

    What a vectorised op replaces: one small tensor op per (sample, token) and per sample for the
    labels. Same arguments and result as `mix_elementwise_timm_style`.
    """
    lam_host, partner_host = lam.tolist(), partner.tolist()
    mixed, mixed_labels = torch.empty_like(tokens), torch.empty_like(labels)
    for i, (weight, j) in enumerate(zip(lam_host, partner_host)):
        for position in range(tokens.shape[1]):
            mixed[i, position] = tokens[i, position] * weight + tokens[j, position] * (1.0 - weight)
        mixed_labels[i] = labels[i] * weight + labels[j] * (1.0 - weight)
    return mixed, mixed_labels

"""MergeMix: paste a partner's most attended patches, found through token merging, and mix labels.

MergeMix (Jin, Li, Jian, Yu, Wang; arXiv:2510.23479) mixes two images with a mask
taken from the attention of a token-merging (ToMe) encoder, then mixes the labels with a ratio that is
re-sampled from a Gaussian. On the vision embeddings ``X`` ``[B, N, D]`` of a batch this module:

1. merges the tokens of each sample with ToMe's bipartite soft matching (Bolya et al., ICLR 2023):
   even slots form set A, odd slots set B; each A token finds its most cosine-similar B token and
   the ``r`` best such edges are merged by a size-weighted average, leaving ``K = N - r`` merged
   tokens. The result is a *source index* ``[B, N]`` (long, in ``[0, K)``): the merged token each
   original patch ended up in, i.e. the row-one-hot source matrix ``S`` ``[B, N, K]`` of the paper in
   index form (`source_matrix` expands it);
2. scores each merged token by the attention it receives in one cheap single-head self-attention
   over the merged tokens, with ToMe's proportional attention (a ``log(size)`` bias on the keys),
   averaged over the queries; when the batch carries ``saliency`` it is used instead, pooled into
   the merged tokens by the same size-weighted average;
3. recovers one attention value per original patch through the source index (every patch gets the
   score of the merged token it belongs to: the paper's ``R_{K->L}(A_K, S)``);
4. pastes, into each sample ``i``, the ``k = round(mask_ratio * N)`` kept patches of its partner
   ``j`` (`sampling.random_partners`) with the highest recovered attention (TopK mask);
5. mixes labels ``(1 - lam) y_i + lam y_j`` with ``lam`` the partner's share, re-sampled as in the
   paper (see `MergeMix`).

Dropped patches (``vision_mask`` False) have size 0: they add nothing to any merged token, no patch is
merged into a dropped B token while a kept one exists, and edges that start at a dropped A token rank
last, so they are merged only when a sample has fewer than ``r`` valid edges (then with zero weight).
Their recovered attention is ``-inf`` and they are never pasted.

The pieces are module-level functions (`merge_count`, `bipartite_soft_matching`, `source_matrix`,
`merge_tokens`, `proportional_attention_scores`, `recover_attention`, `topk_mask`,
`normalise_lambda`) so each can be tested on its own. Our own code, written from the papers; the
ToMe and MergeMix repositories were read as references only.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.errors import OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params, where_active
from autoaug.ops.registry import register

LAMBDA_MODES = ("gaussian", "area")
_EMPTY_KEY_BIAS = -1e9  # attention bias of a merged token holding only dropped patches (size 0)


# ------------------------------------------------------------------------------------ token merging
def merge_count(num_tokens: int, merge_ratio: float) -> int:
    """ToMe's ``r``: how many tokens one bipartite step removes, ``round(merge_ratio * (N // 2))``.

    One step can remove at most ``N // 2`` tokens (the size of the smaller set), so ``merge_ratio``
    is the fraction of that maximum: 0 merges nothing, 1 removes ``N // 2`` tokens.
    """
    return min(int(math.floor(merge_ratio * (num_tokens // 2) + 0.5)), num_tokens // 2)


def bipartite_soft_matching(tokens: Tensor, keep: Tensor, r: int) -> Tensor:
    """Source index ``[B, N]`` (long, in ``[0, N - r)``) of one ToMe bipartite soft-matching step.

    Set A is the even slots, set B the odd ones. Each A token's best match is the B token of highest
    cosine similarity; the ``r`` A tokens with the most similar best matches are merged into them.
    Merged-token layout (what `merge_tokens` relies on): slots ``[0, |A| - r)`` hold the unmerged A
    tokens in their original order, slot ``|A| - r + j`` holds B token ``j`` (original slot
    ``2 j + 1``) together with every A token merged into it.

    ``keep`` ``[B, N]`` bool: dropped tokens never serve as a destination while a kept B token exists,
    and A tokens that are dropped (or have no kept destination) rank last, so they are merged only when
    fewer than ``r`` valid edges exist. Ties rank the lower slot first (stable sort).
    """
    batch, tokens_count, _ = tokens.shape
    device = tokens.device
    count_a, count_b = (tokens_count + 1) // 2, tokens_count // 2
    r = max(0, min(int(r), count_b))
    merged = torch.zeros(batch, count_a, dtype=torch.bool, device=device)
    destination = torch.zeros(batch, count_a, dtype=torch.long, device=device)
    if r > 0:
        metric = tokens.float()
        norms = metric.norm(dim=-1).clamp_min(1e-12)  # cosine via norms: no normalised copy of X
        similarity = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)  # [B, |A|, |B|]
        similarity = similarity / (norms[:, ::2].unsqueeze(2) * norms[:, 1::2].unsqueeze(1))
        similarity = similarity.masked_fill(~keep[:, 1::2].unsqueeze(1), float("-inf"))
        best, destination = similarity.max(dim=-1)  # [B, |A|]
        best = best.masked_fill(~keep[:, ::2], float("-inf"))
        order = best.argsort(dim=1, descending=True, stable=True)  # A tokens by edge score, best first
        merged = merged.scatter(1, order[:, :r], True)
    unmerged = count_a - r
    slot_a = torch.where(merged, unmerged + destination, (~merged).long().cumsum(dim=1) - 1)
    slot_b = unmerged + torch.arange(count_b, device=device).expand(batch, count_b)
    source = torch.empty(batch, tokens_count, dtype=torch.long, device=device)
    source[:, ::2] = slot_a
    source[:, 1::2] = slot_b
    return source


def source_matrix(source: Tensor, num_merged: int) -> Tensor:
    """Expand a source index ``[B, N]`` into the paper's source matrix ``S`` ``[B, N, K]`` (float32).

    Row ``n`` is one-hot at ``source[n]``: every original patch belongs to exactly one merged token.
    """
    matrix = torch.zeros(*source.shape, num_merged, device=source.device)
    return matrix.scatter_(2, source.unsqueeze(-1), 1.0)


def merge_tokens(tokens: Tensor, size: Tensor, source: Tensor, num_merged: int) -> tuple[Tensor, Tensor]:
    """Size-weighted average of the sources of each merged token (ToMe's ``merge_wavg``).

    ``tokens`` ``[B, N, D]``, ``size`` ``[B, N]`` (0 for dropped patches), ``source`` ``[B, N]`` in the
    layout of `bipartite_soft_matching`. Returns ``(merged [B, K, D] float32, merged_size [B, K])``;
    a merged token whose sources all have size 0 is the zero vector with size 0.

    Only the ``r`` merged A tokens go through a (deterministic) batched matmul onto their B tokens;
    the unmerged A tokens are gathered. No atomic scatter-add, so CUDA results are bit-reproducible.
    """
    batch, tokens_count, width = tokens.shape
    r = tokens_count - num_merged
    unmerged = (tokens_count + 1) // 2 - r
    rows = tokens.float().reshape(batch * tokens_count, width)  # row-wise index_select beats gather
    size = size.float()
    size_a, size_b = size[:, ::2], size[:, 1::2]
    slot_a = source[:, ::2]
    # Stable: the unmerged A tokens first, in original order (= their slots), then the merged ones.
    order = (slot_a >= unmerged).to(torch.uint8).argsort(dim=1, stable=True)
    keep_index, merge_index = order[:, :unmerged], order[:, unmerged:]
    first_row = torch.arange(batch, device=tokens.device).unsqueeze(1) * tokens_count

    def take(slots: Tensor) -> Tensor:  # [B, m] original slots -> [B, m, D] rows
        return rows.index_select(0, (first_row + slots).reshape(-1)).view(batch, -1, width)

    kept_size = size_a.gather(1, keep_index)
    kept = take(2 * keep_index).mul_(kept_size.unsqueeze(-1))
    onto = slot_a.gather(1, merge_index) - unmerged  # [B, r]: the B token each merged A joins
    weights = torch.zeros(batch, tokens_count // 2, r, device=tokens.device)
    weights.scatter_(1, onto.unsqueeze(1), size_a.gather(1, merge_index).unsqueeze(1))
    joined = torch.bmm(weights, take(2 * merge_index))  # contiguous: bmm into a slice is very slow
    joined.addcmul_(tokens.float()[:, 1::2], size_b.unsqueeze(-1))
    merged = torch.cat((kept, joined), dim=1)
    merged_size = torch.cat((kept_size, size_b + weights.sum(dim=2)), dim=1)
    return merged.div_(merged_size.clamp_min(1e-12).unsqueeze(-1)), merged_size


def proportional_attention_scores(merged: Tensor, merged_size: Tensor) -> Tensor:
    """``[B, K]``: attention each merged token receives, averaged over the (non-empty) queries.

    One head, queries = keys = the layer-normalised merged tokens, logits scaled by ``1 / sqrt(D)``
    plus ToMe's proportional-attention bias ``log(size)`` on each key (a token standing for ``s``
    patches counts ``s`` times). Empty merged tokens (size 0) are neither keys nor queries. Each row
    of the attention sums to 1, so the scores of a sample with a kept patch sum to 1.

    The layer norm (no affine) is folded into the Gram matrix, ``LN(x)·LN(y) = (x·y - D mu_x mu_y) /
    (s_x s_y)`` with the variances read off its diagonal, so no normalised copy is written.
    """
    width = merged.shape[-1]
    mean = merged.mean(dim=-1)
    gram = merged @ merged.transpose(1, 2)
    centred = gram - width * mean.unsqueeze(2) * mean.unsqueeze(1)
    variance = centred.diagonal(dim1=1, dim2=2) / width  # E[x^2] - mean^2, read off the diagonal
    inv_std = (variance.clamp_min(0.0) + 1e-5).rsqrt()
    valid = merged_size > 0
    empty = torch.full_like(merged_size, _EMPTY_KEY_BIAS)
    bias = torch.where(valid, merged_size.clamp_min(1e-12).log(), empty)
    scale = inv_std * width ** -0.25  # 1/sqrt(D) shared between query and key
    logits = centred * scale.unsqueeze(2) * scale.unsqueeze(1) + bias.unsqueeze(1)
    attention = logits.softmax(dim=-1)
    queries = valid.float()
    return (queries.unsqueeze(1) @ attention).squeeze(1) / queries.sum(1, keepdim=True).clamp_min(1.0)


def recover_attention(merged_scores: Tensor, source: Tensor) -> Tensor:
    """``[B, N]``: each original patch gets the score of the merged token it belongs to."""
    return merged_scores.gather(1, source)


def topk_mask(scores: Tensor, k: int, candidates: Tensor) -> Tensor:
    """``[B, N]`` bool: the ``k`` candidates of each row with the highest scores.

    Rows with fewer than ``k`` candidates get all of them. Ties go to the lower index (stable sort),
    the same on every device.
    """
    ranked = scores.float().masked_fill(~candidates, float("-inf"))
    order = ranked.argsort(dim=1, descending=True, stable=True)[:, :k]
    chosen = torch.zeros_like(candidates).scatter_(1, order, True)
    return chosen & candidates


def normalise_lambda(raw: Tensor, valid: Tensor, tau: float) -> Tensor:
    """MergeMix's ``clip((l - min l) / (max l - min l + tau), 0, 1)``, min and max over ``valid`` samples.

    Samples outside ``valid`` get 0. With a single valid sample the result is 0 (as the formula gives).
    """
    low = raw.masked_fill(~valid, float("inf")).amin()
    high = raw.masked_fill(~valid, float("-inf")).amax()
    scaled = ((raw - low) / (high - low + tau)).clamp(0.0, 1.0)
    return torch.where(valid, scaled, torch.zeros_like(raw))


def merged_patch_scores(batch: MultimodalBatch, merge_ratio: float) -> tuple[Tensor, int]:
    """``([B, N] recovered score per patch, r)``: steps 1-3 of MergeMix on the batch's vision tokens.

    Dropped patches score ``-inf``. Uses ``batch.saliency`` pooled into the merged tokens when present,
    the proportional attention of the merged tokens otherwise.
    """
    keep = batch.vision_mask
    tokens_count = keep.shape[1]
    r = merge_count(tokens_count, merge_ratio)
    source = bipartite_soft_matching(batch.vision, keep, r)
    num_merged = tokens_count - r
    size = keep.float()
    if batch.saliency is not None:
        pooled, merged_size = merge_tokens(batch.saliency.unsqueeze(-1), size, source, num_merged)
        merged_scores = pooled.squeeze(-1)
    else:
        merged, merged_size = merge_tokens(batch.vision, size, source, num_merged)
        merged_scores = proportional_attention_scores(merged, merged_size)
    return recover_attention(merged_scores, source).masked_fill(~keep, float("-inf")), r


# ------------------------------------------------------------------------------------------- the op
@register
class MergeMix(Op):
    """Paste the partner's most attended patches (ToMe-merged attention, TopK) and mix the labels.

    Semantics (arXiv:2510.23479): bipartite soft matching merges ``r = round(merge_ratio *
    N/2)`` tokens of each sample; the attention each merged token receives (proportional attention,
    or ``batch.saliency`` pooled, when present) is recovered to the original patches through the
    source index; then each sample ``i`` receives, slot for slot, the ``k = round(mask_ratio * N)``
    kept patches of a random partner ``j != i`` with the highest recovered attention: content,
    ``vision_mask``, ``vision_masked``, grid position and ``saliency`` move with the patch, and the
    alignment of ``i``'s text to the pasted slots is cleared (those patches no longer show ``i``).
    A partner with fewer than ``k`` kept patches gives all of them (``k_i`` = patches actually pasted).
    Text is untouched. Labels become ``(1 - lam) y_i + lam y_j`` (``lam`` = the partner's share):

    - ``lambda_mode="gaussian"`` (default; paper, "Label Mixing"): ``lam_raw ~ N(mu, sigma)`` with
      ``mu = k_i / N`` (the mask ratio actually applied) and ``sigma = r / N`` (the merge ratio as a
      fraction of the tokens, as the reference's ``merge_num / 196``), then ``lam = clip((lam_raw -
      min) / (max - min + tau), 0, 1)`` with min and max over the samples of the batch that mix
      (the reference ``MergeMix.lambda_scale`` in Westlake-AI/openmixup normalises over the batch
      array, ``tau = 1e-5``). Note: the reference code passes mean and spread the other way round
      (mean = merge ratio, std = per-sample mask ratio); we follow the paper. Because of the batch
      min-max, ``lam`` spans [0, 1) whatever ``mu`` and ``sigma`` are when every sample pastes ``k``.
    - ``lambda_mode="area"``: ``lam = k_i / N`` (the reference's default, ``lam_scale=False``).

    Magnitude -> mask ratio in [0, 0.5]: 0 pastes nothing (identity); 0.5 pastes half the slots, the
    most a partner may take before it dominates the sample (the MergeMix LLaVA trainer hands the label
    to the partner past 0.5). Unlike the guidelines' masking ratios (5-25%), the pasted tokens carry real
    content and their share is paid back in the label, as in CutMix. Options: ``merge_ratio`` in
    [0, 1] (default 0.5: ``r = N/4``, 49 of 196 tokens), ``lambda_mode``, ``tau`` > 0.

    Params: ``partner`` [B] long, ``paste`` [B, Nv] bool (slots that receive the partner's patch),
    ``lambda_raw`` [B] float (the Gaussian draw), ``lam`` [B] float (the partner's label share).
    A sample that pastes nothing (``k = 0``, a partner without kept patches, or B = 1) is not augmented.
    """

    name = "mergemix"
    uses_saliency = True
    stage = "embedding"
    modality = "vision"
    parameter = "mask ratio: fraction of slots that receive the partner's most attended patches"
    default_range = (0.0, 0.5)
    mixes_labels = True

    def __init__(
        self,
        merge_ratio: float = 0.5,
        lambda_mode: str = "gaussian",
        tau: float = 1e-5,
        magnitude_range: Optional[tuple[float, float]] = None,
    ) -> None:
        super().__init__(magnitude_range)
        if isinstance(merge_ratio, bool) or not isinstance(merge_ratio, (int, float)) \
                or not 0.0 <= merge_ratio <= 1.0:
            raise OpArgumentError(
                f"{self.name}: merge_ratio must be a number in [0, 1] (fraction of N/2 tokens merged), "
                f"got {merge_ratio!r}"
            )
        if lambda_mode not in LAMBDA_MODES:
            raise OpArgumentError(
                f"{self.name}: lambda_mode must be one of {', '.join(LAMBDA_MODES)}, got {lambda_mode!r}"
            )
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
            raise OpArgumentError(f"{self.name}: tau must be a finite number > 0, got {tau!r}")
        self.merge_ratio = float(merge_ratio)
        self.lambda_mode = lambda_mode
        self.tau = float(tau)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        batch_size, tokens_count = batch.vision_mask.shape
        device = batch.device
        partner = sampling.random_partners(generator, batch_size, device)
        noise = sampling.normal(generator, (batch_size,), device)
        k = min(int(math.floor(strength * tokens_count + 0.5)), tokens_count)
        if k > 0:
            scores, r = merged_patch_scores(batch, self.merge_ratio)
            paste = topk_mask(scores[partner], k, batch.vision_mask[partner])
        else:
            r = merge_count(tokens_count, self.merge_ratio)
            paste = torch.zeros_like(batch.vision_mask)
        pasted = paste.sum(dim=1)
        applies = (pasted > 0) & (partner != torch.arange(batch_size, device=device))
        paste = paste & applies.unsqueeze(1)
        mu = pasted.float() / tokens_count
        lambda_raw = mu + (r / tokens_count) * noise
        if self.lambda_mode == "gaussian":
            lam = normalise_lambda(lambda_raw, applies, self.tau)
        else:
            lam = torch.where(applies, mu, torch.zeros_like(mu))
        return {"partner": partner, "paste": paste, "lambda_raw": lambda_raw, "lam": lam, "applies": applies}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        partner = params["partner"]
        paste = params["paste"] & active.unsqueeze(1)
        batch_size, tokens_count = paste.shape
        # One flat gather per field: slot n of sample b comes from (partner or b, n).
        own = torch.arange(batch_size, device=batch.device).unsqueeze(1)
        rows = torch.where(paste, partner.unsqueeze(1), own)
        flat = (rows * tokens_count + torch.arange(tokens_count, device=batch.device)).reshape(-1)

        def from_partner(field: Tensor) -> Tensor:
            return field.reshape(batch_size * tokens_count, *field.shape[2:]).index_select(0, flat) \
                .view(field.shape)

        changes = dict(
            vision=from_partner(batch.vision),
            vision_mask=from_partner(batch.vision_mask),
            vision_masked=from_partner(batch.vision_masked),
            vision_positions=from_partner(batch.vision_positions),
        )
        if batch.saliency is not None:
            changes["saliency"] = from_partner(batch.saliency)
        if batch.alignment is not None:
            changes["alignment"] = batch.alignment & ~paste.unsqueeze(1)
        lam = params["lam"].float().unsqueeze(1)  # mix in float32, even for half-precision labels
        labels = batch.labels.float()
        mixed = ((1 - lam) * labels + lam * labels.index_select(0, partner)).to(batch.labels.dtype)
        changes["labels"] = where_active(active, mixed, batch.labels)
        return batch.replace(**changes)

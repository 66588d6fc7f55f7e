"""Perturbation ops: small, meaning-preserving changes to token content.

docs/GUIDELINES.md, "Embedding noise" and the strength table: Gaussian noise on the embeddings, ``e'
= e + ε`` with σ at 0.01–0.1 of the embedding magnitude (conservative 0.01–0.02, moderate 0.02–0.05,
aggressive 0.05–0.10), and token substitution, "replace tokens with semantically similar
alternatives": nearest neighbours in the text embedding table, similar patches from the same image
or from another one. Every op here keeps the sequence's layout (no slot moves, no keep-mask changes)
and never touches special tokens, padding, dropped tokens or mask-filled patches.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from autoaug.batch import IGNORE_INDEX, MultimodalBatch
from autoaug.errors import OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register


def _editable_text(batch: MultimodalBatch) -> Tensor:
    """``[B, Nt]`` text positions an op may change: kept, not special/padding, not an MLM target."""
    editable = batch.text_content
    if batch.mlm_labels is not None:
        editable = editable & (batch.mlm_labels == IGNORE_INDEX)
    return editable


def _editable_vision(batch: MultimodalBatch) -> Tensor:
    """``[B, Nv]`` patches an op may change: kept and still holding their own content (not masked)."""
    return batch.vision_mask & ~batch.vision_masked


def out_buffer(target: Tensor, *inputs: Tensor) -> Optional[Tensor]:
    """``target`` to reuse as the ``out=`` of an op on ``inputs``, or None where autograd records the
    op (``out=`` cannot be differentiated, and embeddings from a model's forward require grad)."""
    recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (target, *inputs))
    return None if recorded else target


@register
class EmbeddingNoise(Op):
    """Add Gaussian noise scaled by each token's RMS to the vision and text embeddings.

    ``e' = e + σ · rms(e) · ε`` with ``ε ~ N(0, I)`` and ``rms(e) = sqrt(mean_D e²)`` per token, so σ
    is relative to the embedding's own magnitude whatever its scale. Applied to kept, unmasked patch
    embeddings and to kept, non-special text embeddings (not MLM targets); masks, ids and positions
    are unchanged. Magnitude → σ in [0, 0.10] (docs/GUIDELINES.md: "σ = 0.01–0.1 of embedding magnitude";
    conservative 0.01–0.02, moderate 0.02–0.05, aggressive 0.05–0.10).

    Params: ``sigma`` [B] float; ``noise_seed`` [B] int64 (one seed for the whole batch, repeated so
    every param has the batch dimension). `_apply` expands the seed into ``ε`` with a generator on the
    batch's device (vision noise ``[B, Nv, D]`` first, then text noise ``[B, Nt, D]``), so replay is
    exact on the same device type (CPU and CUDA streams differ). Why a seed and not the noise itself
    (measured on the benchmark batch B=64, Nv=196, Nt=64, D=768, CPU, one thread): stored noise is
    48.75 MiB of params per call against 832 bytes, and drawing it costs the same in either half
    (61 ms to draw ε in `_sample` against 70 ms for the whole seeded `_apply`), so storing buys
    nothing but a params dict too large to log each step. On CUDA a seed also lets ε come from the
    device generator instead of a CPU draw plus a 49 MiB host-to-device copy.
    """

    name = "embedding_noise"
    stage = "embedding"
    modality = "cross"
    parameter = "noise std relative to each token's RMS (sigma)"
    default_range = (0.0, 0.10)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size = (batch.batch_size,)
        seed = sampling.derived_seed(generator)
        return {
            "sigma": torch.full(size, strength, dtype=torch.float32, device=batch.device),
            "noise_seed": torch.full(size, seed, dtype=torch.int64, device=batch.device),
        }

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        noise_generator = torch.Generator(device=batch.device)
        noise_generator.manual_seed(int(params["noise_seed"][0]))
        sigma = params["sigma"].to(batch.device)
        vision = _add_relative_noise(batch.vision, _editable_vision(batch), sigma, active, noise_generator)
        text = _add_relative_noise(batch.text_embeddings, _editable_text(batch), sigma, active,
                                   noise_generator)
        return batch.replace(vision=vision, text_embeddings=text)


def _add_relative_noise(tokens: Tensor, editable: Tensor, sigma: Tensor, active: Tensor,
                        generator: torch.Generator) -> Tensor:
    """``tokens + σ · rms · ε`` on editable tokens of active samples, one fused pass over the tokens.

    Elsewhere in an active sample the scale is 0, so a token keeps its value (``e + 0·ε``; only a
    ``-0.0`` could come back as ``+0.0``); inactive samples are copied back bit for bit.
    """
    noise = torch.randn(tokens.shape, generator=generator, device=tokens.device, dtype=tokens.dtype)
    rms = torch.linalg.vector_norm(tokens.detach(), dim=-1, keepdim=True, dtype=torch.float32)
    rms = rms * (1.0 / math.sqrt(tokens.shape[-1]))
    scale = rms * (sigma * active).view(-1, 1, 1) * editable.unsqueeze(-1)
    noisy = torch.addcmul(tokens, noise, scale.to(tokens.dtype), out=out_buffer(noise, tokens))
    idle = (~active).nonzero().squeeze(1)
    return noisy.index_copy_(0, idle, tokens.index_select(0, idle))


@register
class TextTokenSubstitution(Op):
    """Replace text tokens by one of their k nearest neighbours (cosine) in the embedding table.

    Each kept, non-special text token (not an MLM target) is selected with probability p and its id
    becomes one of the ``k`` ids whose table rows are closest to its own by cosine similarity,
    chosen uniformly, never itself and never a special id of ``batch.vocab`` (pad, mask and
    ``special_ids``) and never an id beyond ``batch.vocab.vocab_size``. Masks and embeddings are
    untouched (a token-stage op: embeddings, if present, are not recomputed). Similarities are
    computed only for the distinct selected ids against the table (``[U, V]``, never ``V × V``), so
    the cost is O(U · V · D) per call. Magnitude → p in [0, 0.30] (the guidelines' token-level
    rates: 0.05–0.10 conservative, 0.10–0.20 moderate, 0.20–0.30 aggressive).

    Options: ``k`` (int ≥ 1, default 5); ``table`` ``[V, D]`` float (default: the batch's
    ``text_embedding_table``). Params: ``substitute`` [B, Nt] bool, ``replacement_ids`` [B, Nt] long
    (the new id where ``substitute``, the old id elsewhere), so replay needs no table.
    """

    name = "text_token_substitution"
    stage = "token"
    modality = "text"
    parameter = "substitution probability per token"
    default_range = (0.0, 0.30)

    def __init__(self, magnitude_range: Optional[tuple[float, float]] = None, k: int = 5,
                 table: Optional[Tensor] = None) -> None:
        super().__init__(magnitude_range)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise OpArgumentError(f"{self.name}: option 'k' must be an integer >= 1, got {k!r}")
        if table is not None and not (
            isinstance(table, Tensor) and table.dim() == 2 and table.is_floating_point()
            and table.shape[0] >= 2
        ):
            raise OpArgumentError(
                f"{self.name}: option 'table' must be a float tensor [V, D] with V >= 2, got "
                f"{getattr(table, 'shape', type(table).__name__)!r}"
            )
        self.k = k
        self.table = table

    def _table(self, batch: MultimodalBatch) -> Tensor:
        if self.table is None:
            batch.require("text_embedding_table", op=self.name)
            table = batch.text_embedding_table
        else:
            table = self.table.to(batch.device)
        if batch.vocab is not None and table.shape[0] < batch.vocab.vocab_size:
            raise OpArgumentError(
                f"{self.name}: the embedding table has {table.shape[0]} rows but the vocabulary has "
                f"{batch.vocab.vocab_size} ids"
            )
        return table if batch.vocab is None else table[: batch.vocab.vocab_size]  # ids in the vocabulary

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        table = self._table(batch)
        shape = batch.text_ids.shape
        substitute = sampling.bernoulli(generator, strength, shape, batch.device) & _editable_text(batch)
        rank_draw = sampling.uniform(generator, shape, batch.device)
        replacement = batch.text_ids.clone()
        ids = batch.text_ids[substitute]
        if ids.numel():
            distinct, inverse = torch.unique(ids, return_inverse=True)
            neighbours = self._nearest(table, distinct, batch)  # [U, k_eff]
            if neighbours.shape[1] == 0:
                substitute = torch.zeros_like(substitute)
            else:
                count = neighbours.shape[1]
                rank = (rank_draw[substitute] * count).long().clamp_(max=count - 1)
                new_ids = neighbours[inverse, rank].to(replacement.dtype)
                replacement = replacement.masked_scatter(substitute, new_ids)
        return {"substitute": substitute, "replacement_ids": replacement}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        substitute = params["substitute"] & active.unsqueeze(1)
        return batch.replace(text_ids=torch.where(substitute, params["replacement_ids"], batch.text_ids))

    def _nearest(self, table: Tensor, ids: Tensor, batch: MultimodalBatch) -> Tensor:
        """``[U, k']`` ids of the k nearest rows (cosine) to each of ``ids``, excluding self and specials."""
        queries = table[ids].float()
        queries = queries / torch.linalg.vector_norm(queries, dim=1, keepdim=True).clamp_min(1e-12)
        norms = torch.linalg.vector_norm(table, dim=1, dtype=torch.float32).clamp_min(1e-12)
        similarity = (queries @ table.float().T) / norms  # [U, V]
        excluded = torch.zeros(table.shape[0], dtype=torch.bool, device=table.device)
        if batch.vocab is not None:
            specials = {batch.vocab.pad_id, batch.vocab.mask_id, *batch.vocab.special_ids}
            excluded[torch.tensor(sorted(specials), device=table.device)] = True
        similarity.masked_fill_(excluded, float("-inf"))
        similarity.scatter_(1, ids.long().unsqueeze(1), float("-inf"))
        available = table.shape[0] - int(excluded.sum()) - 1
        count = max(0, min(self.k, available))
        return similarity.topk(count, dim=1).indices


@register
class VisionPatchSubstitution(Op):
    """Replace patch contents by the most similar other patch, from the same image or a partner image.

    Each kept, unmasked patch is selected with probability p; its content becomes that of the most
    similar (cosine) other kept, unmasked patch of a source image: the sample itself, or with
    probability ``across_probability`` (per sample) a random partner (`sampling.random_partners`;
    itself when B = 1). Only ``vision`` changes: positions, masks and saliency stay with the slot.
    Similarities are one ``bmm`` ``[B, Nv, Nv]`` (never ``B × Nv × Nv × D``). Magnitude → p in
    [0, 0.30] (the guidelines' token-level rates: 0.05–0.10 conservative, 0.10–0.20 moderate,
    0.20–0.30 aggressive).

    Options: ``across_probability`` in [0, 1] (default 0.5). Params: ``substitute`` [B, Nv] bool,
    ``source_sample`` [B] long (the image the new contents come from), ``source_slot`` [B, Nv] long.
    """

    name = "vision_patch_substitution"
    stage = "token"
    modality = "vision"
    parameter = "substitution probability per patch"
    default_range = (0.0, 0.30)

    def __init__(self, magnitude_range: Optional[tuple[float, float]] = None,
                 across_probability: float = 0.5) -> None:
        super().__init__(magnitude_range)
        value = across_probability
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise OpArgumentError(
                f"{self.name}: option 'across_probability' must be a number in [0, 1], got {value!r}"
            )
        self.across_probability = float(value)

    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        size, device = batch.batch_size, batch.device
        editable = _editable_vision(batch)
        substitute = sampling.bernoulli(generator, strength, editable.shape, device) & editable
        across = sampling.bernoulli(generator, self.across_probability, (size,), device)
        partner = sampling.random_partners(generator, size, device)
        own = torch.arange(size, device=device)
        source = torch.where(across, partner, own)
        found, slot = _most_similar_patch(batch.vision, editable, substitute, source, source == own)
        return {"substitute": substitute & found, "source_sample": source, "source_slot": slot}

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        substitute = params["substitute"] & active.unsqueeze(1)
        incoming = batch.vision[params["source_sample"].unsqueeze(1), params["source_slot"]]
        vision = torch.where(substitute.unsqueeze(-1), incoming, batch.vision, out=out_buffer(incoming))
        return batch.replace(vision=vision)


def _most_similar_patch(tokens: Tensor, candidates: Tensor, queries: Tensor, source: Tensor,
                        same_image: Tensor) -> tuple[Tensor, Tensor]:
    """For each query patch, the most cosine-similar candidate patch of image ``source[b]``.

    Only the query rows are compared: they are packed first in each row (``M`` = the most queries of
    any sample), so the similarity is one ``bmm`` ``[B, M, Nv]``. The query's own norm does not
    change its argmax, so only the candidates' norms divide the dot products. In the same image the
    query's own slot is excluded. Returns ``found`` [B, Nv] bool (a query with at least one
    candidate) and ``slot`` [B, Nv] long (the chosen slot; the query's own slot where none).
    """
    size, count = queries.shape
    positions = torch.arange(count, device=tokens.device)
    slot = positions.expand(size, -1).clone()
    rows = int(queries.sum(dim=1).amax()) if queries.numel() else 0
    if rows == 0:
        return torch.zeros_like(queries), slot
    order = torch.argsort((~queries).to(torch.uint8), dim=1, stable=True)[:, :rows]  # [B, M]
    packed = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])).float()
    keys = tokens.index_select(0, source).float()
    key_norms = torch.linalg.vector_norm(keys, dim=-1).clamp_min(1e-12)  # [B, Nv]
    similarity = torch.bmm(packed, keys.transpose(1, 2)).div_(key_norms.unsqueeze(1))  # [B, M, Nv]
    allowed = candidates.index_select(0, source).unsqueeze(1) \
        & ~(same_image.view(-1, 1, 1) & (positions.view(1, 1, -1) == order.unsqueeze(-1)))
    best, best_slot = similarity.masked_fill_(~allowed, float("-inf")).max(dim=2)
    found = torch.isfinite(best) & queries.gather(1, order)
    return torch.zeros_like(queries).scatter_(1, order, found), slot.scatter_(1, order, best_slot)

"""The tiny VLM of the proxy task: one joint transformer over image-patch tokens and text tokens.

The pipeline stages of docs/ARCHITECTURE.md map onto three calls:

- `TinyVLM.to_token_stage` (pixel -> token stage): `patchify` cuts ``images`` ``[B, 3, H, W]`` into
  patch pixels ``vision`` ``[B, Nv, 3*p*p]`` (per patch channel-major, then rows, then columns) with
  their ``(row, col)`` grid positions, and attaches ``text_embedding_table`` for the text
  substitution op;
- `TinyVLM.embed` (token -> embedding stage): ``vision`` becomes a linear patch embedding (a learned
  [MASK] embedding where ``vision_masked``) plus row and column position embeddings looked up from
  ``vision_positions`` (so ops that scramble positions change what the model sees), and
  ``text_embeddings`` = token embedding + 1-D position embedding (by slot);
- `TinyVLM.forward` (embedding stage -> logits): a learned modality-type embedding is added, the two
  halves are concatenated in the order each sample's ``vision_first`` says (one batched gather),
  a learned start token is put in front (so no sequence is ever empty, even with a whole modality
  dropped), and one ``nn.TransformerEncoder`` runs over it with key padding from ``vision_mask`` /
  ``text_mask``.

Variants (``TinyVLMConfig.variant``):

- ``encoder``: bidirectional; the answer is read at the start token (a [CLS]);
- ``causal``: a decoder with a causal mask over the whole joint sequence (image and question are the
  prefix of the answer); the answer is read at the last kept position, as next-token prediction
  would. Here the order of tokens matters, so order ops (permute, modality swap) mean something.

The last layer runs for the answer position only (it is all the head needs), as a manual
pre-norm block with the layer's own weights; its attention weights over the vision tokens, averaged
over heads and renormalised over the kept vision tokens, are the ``saliency`` ``[B, Nv]`` the
attention-guided ops read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoaug.batch import MultimodalBatch
from autoaug.errors import AutoaugInputError

Variant = Literal["encoder", "causal"]
VARIANTS: tuple[str, ...] = ("encoder", "causal")


# ---------------------------------------------------------------------- patches
def patchify(images: Tensor, patch_size: int) -> tuple[Tensor, Tensor]:
    """``images`` ``[B, C, H, W]`` -> patch pixels ``[B, Nv, C*p*p]`` in raster order and their
    ``(row, col)`` grid positions ``[B, Nv, 2]`` (long). ``H`` and ``W`` must be multiples of ``p``."""
    batch, channels, height, width = images.shape
    if height % patch_size or width % patch_size:
        raise AutoaugInputError(
            f"patchify: image size {height}x{width} is not a multiple of patch_size={patch_size}")
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, cols, patch_size) \
        .permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels * patch_size * patch_size)
    return patches, grid_positions(rows, cols, images.device).expand(batch, -1, -1)


def unpatchify(patches: Tensor, positions: Tensor, grid: tuple[int, int], patch_size: int,
               channels: int = 3) -> Tensor:
    """Put each patch back at its ``(row, col)`` position: ``[B, C, rows*p, cols*p]`` (cells no patch
    names stay 0). The inverse of `patchify`; after a position scramble it shows what the model sees."""
    batch, tokens, _ = patches.shape
    rows, cols = grid
    canvas = patches.new_zeros(batch, rows, cols, channels, patch_size, patch_size)
    sample = torch.arange(batch, device=patches.device).unsqueeze(1).expand(-1, tokens)
    canvas[sample, positions[..., 0], positions[..., 1]] = \
        patches.reshape(batch, tokens, channels, patch_size, patch_size)
    return canvas.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows * patch_size, cols * patch_size)


def grid_positions(rows: int, cols: int, device: torch.device | str = "cpu") -> Tensor:
    """``[1, rows*cols, 2]`` (row, col) in raster order."""
    index = torch.arange(rows * cols, device=device)
    return torch.stack((index // cols, index % cols), dim=-1).unsqueeze(0)


# ---------------------------------------------------------------------- the model
@dataclass(frozen=True)
class TinyVLMConfig:
    """Sizes of the tiny VLM. ``vocab_size`` / ``max_text_length`` come from the tokenizer,
    ``num_classes`` from the task, ``image_size`` from the data.

    Defaults (shapes-vqa, issue 10; README): 8-pixel patches (16 image tokens at 32 px, a quarter of
    the 4-pixel patches' sequence) and width 96 keep a default 30-epoch run to seconds on one core and
    still overfit 600 training examples (an earlier study found width 64 underfitting)."""

    vocab_size: int
    num_classes: int
    max_text_length: int
    image_size: int = 32
    patch_size: int = 8
    channels: int = 3
    width: int = 96
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    variant: Variant = "encoder"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise AutoaugInputError(f"model variant: expected one of {', '.join(VARIANTS)}, got {self.variant!r}")
        for name in ("vocab_size", "num_classes", "max_text_length", "image_size", "patch_size",
                     "channels", "width", "depth", "heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise AutoaugInputError(f"model {name}: expected a positive int, got {value!r}")
        if self.image_size % self.patch_size:
            raise AutoaugInputError(
                f"model patch_size: {self.patch_size} does not divide image_size {self.image_size}")
        if self.width % self.heads:
            raise AutoaugInputError(f"model heads: {self.heads} does not divide width {self.width}")
        if not 0.0 <= self.dropout < 1.0:
            raise AutoaugInputError(f"model dropout: expected a number in [0, 1), got {self.dropout!r}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        return self.channels * self.patch_size * self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)


class VLMOutput(NamedTuple):
    logits: Tensor    # [B, C]
    saliency: Tensor  # [B, Nv], detached; sums to 1 over kept vision tokens (0 where none is kept)


def kept_saliency(scores: Tensor, vision_mask: Tensor) -> Tensor:
    """``scores`` ``[B, Nv]`` (non-negative) zeroed on dropped tokens and normalised to sum 1 over the
    kept ones (all zeros where a sample keeps none): the `VLMOutput.saliency` contract."""
    scores = scores * vision_mask
    return scores / scores.sum(1, keepdim=True).clamp_min(1e-12)


class StagedVLM(nn.Module):
    """What the proxy trial drives: ``to_token_stage`` (pixel -> token), ``embed`` (token -> embedding),
    ``forward`` (embedding -> `VLMOutput`) and ``with_saliency``; `predict` chains them from any stage."""

    def predict(self, batch: MultimodalBatch) -> VLMOutput:
        """Any stage -> output: tokenise and embed as needed, then forward."""
        if batch.text_embeddings is None:
            batch = self.embed(batch)
        return self(batch)


class TinyVLM(StagedVLM):
    """A joint-sequence VLM small enough to train in seconds on a CPU (see the module docstring)."""

    def __init__(self, config: TinyVLMConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.patch_embed = nn.Linear(config.patch_dim, width)
        self.vision_mask_embedding = nn.Parameter(torch.zeros(width))
        self.row_embed = nn.Embedding(config.grid, width)
        self.col_embed = nn.Embedding(config.grid, width)
        self.token_embed = nn.Embedding(config.vocab_size, width)
        self.text_position_embed = nn.Embedding(config.max_text_length, width)
        self.type_embed = nn.Embedding(2, width)  # 0: vision, 1: text
        self.start_token = nn.Parameter(torch.zeros(width))

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(
                d_model=width, nhead=config.heads, dim_feedforward=int(width * config.mlp_ratio),
                dropout=config.dropout, activation="gelu", batch_first=True, norm_first=True)

        self.encoder = nn.TransformerEncoder(layer(), num_layers=config.depth - 1,
                                             enable_nested_tensor=False) if config.depth > 1 else None
        self.readout = layer()  # the last layer, run for the answer position only
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for embedding in (self.row_embed, self.col_embed, self.token_embed, self.text_position_embed,
                          self.type_embed):
            nn.init.normal_(embedding.weight, std=0.02)
        nn.init.normal_(self.vision_mask_embedding, std=0.02)
        nn.init.normal_(self.start_token, std=0.02)

    # ------------------------------------------------------------------ stages
    def to_token_stage(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Pixel -> token stage: patch pixels and grid positions from ``images`` (fresh keep-masks),
        plus the detached ``text_embedding_table``."""
        batch.require("images", op="TinyVLM.to_token_stage")
        images = batch.images
        expected = (self.config.channels, self.config.image_size, self.config.image_size)
        if tuple(images.shape[1:]) != expected:
            raise AutoaugInputError(
                f"TinyVLM: images must be [B, {', '.join(map(str, expected))}], got {list(images.shape)}")
        patches, positions = patchify(images, self.config.patch_size)
        tokens = patches.shape[:2]
        return batch.replace(
            vision=patches,
            vision_positions=positions,
            vision_mask=torch.ones(tokens, dtype=torch.bool, device=patches.device),
            vision_masked=torch.zeros(tokens, dtype=torch.bool, device=patches.device),
            saliency=None,
            alignment=None,
            text_embedding_table=self.text_embedding_table(),
        )

    def embed(self, batch: MultimodalBatch) -> MultimodalBatch:
        """Token -> embedding stage (a pixel-stage batch is tokenised first)."""
        if batch.vision is None:
            batch = self.to_token_stage(batch)
        if batch.vision.shape[-1] != self.config.patch_dim:
            raise AutoaugInputError(
                f"TinyVLM.embed: vision must hold patch pixels [B, Nv, {self.config.patch_dim}], got "
                f"{list(batch.vision.shape)} (already embedded?)")
        if batch.num_text_tokens > self.config.max_text_length:
            raise AutoaugInputError(
                f"TinyVLM.embed: {batch.num_text_tokens} text tokens, the model holds at most "
                f"{self.config.max_text_length}")
        content = self.patch_embed(batch.vision.to(self.patch_embed.weight.dtype))
        content = torch.where(batch.vision_masked.unsqueeze(-1),
                              self.vision_mask_embedding.to(content.dtype), content)
        positions = batch.vision_positions
        vision = content + self.row_embed(positions[..., 0]) + self.col_embed(positions[..., 1])
        slots = torch.arange(batch.num_text_tokens, device=batch.device)
        text = self.token_embed(batch.text_ids) + self.text_position_embed(slots)
        return batch.replace(vision=vision, text_embeddings=text)

    def forward(self, batch: MultimodalBatch) -> VLMOutput:
        """Embedding-stage batch -> `VLMOutput` (logits ``[B, C]``, saliency ``[B, Nv]``)."""
        if batch.text_embeddings is None or batch.vision is None \
                or batch.vision.shape[-1] != self.config.width:
            raise AutoaugInputError(
                "TinyVLM.forward: expected an embedding-stage batch (call TinyVLM.embed first)")
        sequence, keep, vision_slots = self.joint_sequence(batch)
        causal = self.config.variant == "causal"
        length = sequence.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(
            length, device=sequence.device, dtype=torch.bool) if causal else None
        hidden = sequence
        if self.encoder is not None:
            hidden = self.encoder(hidden, mask=mask, src_key_padding_mask=~keep, is_causal=causal)
        if causal:  # the last kept position of each sample (the start token is always kept)
            answer_at = (torch.arange(length, device=keep.device) * keep).amax(1)
        else:
            answer_at = torch.zeros(batch.batch_size, dtype=torch.long, device=keep.device)
        pooled, attention = self._readout(hidden, keep, answer_at)
        logits = self.head(self.norm(pooled))
        saliency = kept_saliency(attention.gather(1, vision_slots), batch.vision_mask)
        return VLMOutput(logits=logits, saliency=saliency.detach().float())

    @torch.no_grad()
    def with_saliency(self, batch: MultimodalBatch) -> MultimodalBatch:
        """The token-stage ``batch`` with ``saliency`` from a no-grad forward of this model over it
        (what attention-guided ops read)."""
        was_training = self.training
        self.eval()
        try:
            saliency = self(self.embed(batch)).saliency
        finally:
            self.train(was_training)
        return batch.replace(saliency=saliency.to(batch.vision.dtype))

    def text_embedding_table(self) -> Tensor:
        """The token embedding weights ``[V, D]``, detached (for the text substitution op)."""
        return self.token_embed.weight.detach()

    # ------------------------------------------------------------------ internals
    def joint_sequence(self, batch: MultimodalBatch) -> tuple[Tensor, Tensor, Tensor]:
        """The joint sequence ``[B, 1+Nv+Nt, D]`` (start token, then vision/text in each sample's
        order), its keep-mask ``[B, 1+Nv+Nt]`` and the sequence slot of every vision token ``[B, Nv]``."""
        nv, nt = batch.num_vision_tokens, batch.num_text_tokens
        device = batch.device
        vision = batch.vision + self.type_embed.weight[0]
        text = batch.text_embeddings.to(vision.dtype) + self.type_embed.weight[1]
        tokens = torch.cat((vision, text), 1)
        keep = torch.cat((batch.vision_mask, batch.text_mask), 1)
        index = torch.arange(nv + nt, device=device)
        text_first = torch.cat((index[nv:], index[:nv]))
        order = torch.where(batch.vision_first.unsqueeze(1), index, text_first)   # [B, Nv+Nt]
        tokens = tokens.gather(1, order.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        keep = keep.gather(1, order)
        start = self.start_token.to(tokens.dtype).expand(batch.batch_size, 1, -1)
        sequence = torch.cat((start, tokens), 1)
        keep = torch.cat((torch.ones_like(keep[:, :1]), keep), 1)
        vision_slots = 1 + index[:nv] + (~batch.vision_first).long().unsqueeze(1) * nt  # [B, Nv]
        return sequence, keep, vision_slots

    def _readout(self, hidden: Tensor, keep: Tensor, answer_at: Tensor) -> tuple[Tensor, Tensor]:
        """The last (pre-norm) layer for the answer position only: its output ``[B, D]`` and its
        head-averaged attention over the sequence ``[B, L]``. Equal to running the full layer and
        taking that position (keys after a causal answer position are all padding)."""
        layer = self.readout
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        query = hidden[rows, answer_at].unsqueeze(1)                               # [B, 1, D]
        keys = layer.norm1(hidden)
        attended, weights = layer.self_attn(layer.norm1(query), keys, keys, key_padding_mask=~keep,
                                            need_weights=True, average_attn_weights=True)
        out = query + layer.dropout1(attended)
        feed = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(out)))))
        out = out + layer.dropout2(feed)
        return out[:, 0], weights[:, 0]


def soft_cross_entropy(logits: Tensor, labels: Tensor, weight: Optional[Tensor] = None) -> Tensor:
    """Cross-entropy against soft labels ``[B, C]`` (mixing ops mix them), weighted per sample
    (``loss_weight``) and averaged by the weights' sum."""
    losses = -(labels.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(-1)
    if weight is None:
        return losses.mean()
    weight = weight.to(losses.dtype)
    return (losses * weight).sum() / weight.sum().clamp_min(1e-12)


def build_model(tokenizer, num_classes: int, image_size: int = 32, **options) -> TinyVLM:
    """A `TinyVLM` sized for a `TextTokenizer` and a task (``options``: any `TinyVLMConfig` field)."""
    config = TinyVLMConfig(vocab_size=tokenizer.vocab_size, num_classes=num_classes,
                           max_text_length=tokenizer.max_length, image_size=image_size, **options)
    return TinyVLM(config)

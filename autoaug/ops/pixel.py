"""Pixel-stage ops: kornia augmentations on ``images`` ``[B, 3, H, W]`` (values in [0, 1]), before tokenising.

docs/GUIDELINES.md, "Stages": pixel ops (crop, colour jitter) run before the image is cut into
patches, and pixel ops come from a maintained batched library: kornia, whose augmentations draw
their parameters and apply them in two separate calls (``forward_parameters(batch_shape)`` and
``forward(images, params=...)``), the same split as our ops.

Every op here is one declaration on `_KorniaPixelOp`: which kornia augmentation to build for a strength,
and what the magnitude means. The base class does the rest:

- ``_sample`` builds the augmentation for the strength and calls ``forward_parameters``. kornia draws
  from the *global* torch RNG, so it runs inside `torch.random.fork_rng`, seeded from the op's
  generator (`sampling.derived_seed`): the same generator seed gives the same params and the caller's
  global RNG state is untouched. kornia samples on the CPU, so params do not depend on the device.
- kornia's params dict becomes ours: every tensor on the batch's device with leading dim B (a value
  kornia draws once per batch, such as ColorJitter's step ``order``, is repeated on every row; a
  constant the op pins, such as solarize's ``additions``, is not stored). ``forward_input_shape`` is
  dropped (rebuilt from the images), and kornia's per-sample coin ``batch_prob`` becomes ``applies``,
  which the base `Op` folds into ``active``.
- ``_apply`` rebuilds kornia's dict and replays it with ``forward(images, params=...)`` on an
  augmentation built with ``p=1`` (kornia's all-rows path), on the active rows only: they are
  gathered, transformed and copied back (``index_copy``), so inactive samples keep their bits and cost
  nothing but the copy (a policy leaves 30-50% of a batch clean). Resampling ops clamp to [0, 1].

A declaration's *flags* (kernel size, output size, interpolation) may depend on the image size but
never on the strength, so replay needs nothing but the params. Per-sample amounts are drawn uniformly
up to the strength (kornia's own sampling), so the magnitude sets the largest change, not a fixed one
as in RandAugment; the ranges at magnitude 1 are RandAugment's (Cubuk et al. 2020, as implemented by
torchvision's ``RandAugment._augmentation_space`` and timm's ``rand_augment_transform``) unless said
otherwise.

Cost: geometric ops are one batched ``grid_sample`` (the crop too: kornia's ``"resample"`` cropping
mode, not its per-sample slicing loop); colour ops are kornia's elementwise programs. Nothing here loops
over samples in Python.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import kornia.augmentation as K
import torch
from torch import Tensor

from autoaug.batch import MultimodalBatch
from autoaug.errors import OpArgumentError
from autoaug.ops import sampling
from autoaug.ops.base import Op, Params
from autoaug.ops.registry import register

# kornia param keys that are not per-sample draws: the shape of the call (rebuilt from the images) and the
# per-sample gate (returned as ``applies`` and folded into ``active``).
_SHAPE_KEY = "forward_input_shape"
_GATE_KEY = "batch_prob"
# ColorJitter's step order when only one step is active: the neutral steps are skipped (no work).
_IN_ORDER = (0, 1, 2, 3)


class _KorniaPixelOp(Op):
    """A kornia augmentation whose strength comes from the magnitude (the shared pixel-op machinery).

    Subclasses declare `augmentation` and, where they need it, `batch_wide_keys`, `pinned_params`,
    `strength_is_probability`, `allowed_range` and `unchanged`.
    """

    stage = "pixel"
    modality = "vision"

    #: the values ``magnitude_range`` may take (checked in ``__init__``), what kornia accepts.
    allowed_range: ClassVar[tuple[float, float]] = (0.0, math.inf)
    #: the strength is the per-sample probability of the (parameter-free) transform: kornia's ``p``.
    strength_is_probability: ClassVar[bool] = False
    #: kornia params drawn once per call (no batch dim): stored repeated on every row, replayed from row 0.
    batch_wide_keys: ClassVar[tuple[str, ...]] = ()
    #: kornia params this op pins to a constant: not stored, refilled with the constant on replay.
    pinned_params: ClassVar[dict[str, object]] = {}
    #: clamp kornia's output to [0, 1] (resampling and blurring can overshoot by a rounding error; kornia's
    #: colour ops clamp already and a flip is exact, so they set this False).
    clamp_output: ClassVar[bool] = True

    def __init__(self, magnitude_range: Optional[tuple[float, float]] = None) -> None:
        super().__init__(magnitude_range)
        low, high = self.allowed_range
        if not all(low <= value <= high for value in self.magnitude_range):
            raise OpArgumentError(
                f"{self.name}: magnitude_range must lie within [{low:g}, {high:g}] "
                f"({self.parameter}), got {magnitude_range!r}"
            )

    # ------------------------------------------------------------------ declared by each op
    def augmentation(self, strength: float, p: float, size: tuple[int, int]) -> K.AugmentationBase2D:
        """The kornia augmentation for a strength, applied with probability ``p``, to images of ``size``."""
        raise NotImplementedError

    def unchanged(self, params: Params) -> Optional[Tensor]:
        """``[B]`` bool: samples whose draw is the identity (not augmented), or None."""
        return None

    # ------------------------------------------------------------------ the shared halves
    def _sample(self, batch: MultimodalBatch, strength: float, generator: torch.Generator) -> Params:
        images = batch.images
        p = strength if self.strength_is_probability else 1.0
        augmentation = self.augmentation(strength, p, tuple(images.shape[-2:]))
        seed = sampling.derived_seed(generator)
        with torch.random.fork_rng(devices=[]):  # kornia samples on the CPU from the global RNG
            torch.manual_seed(seed)
            drawn = augmentation.forward_parameters(tuple(images.shape))
        size = batch.batch_size
        params: Params = {}
        for key, value in drawn.items():
            if key == _SHAPE_KEY or key in self.pinned_params:
                continue
            value = torch.as_tensor(value)
            if key == _GATE_KEY:
                params["applies"] = (value > 0.5).to(batch.device)
                continue
            if key in self.batch_wide_keys:
                value = value.unsqueeze(0).expand(size, *value.shape)
            elif value.dim() == 0:
                value = value.expand(size)
            params[key] = value.contiguous().to(batch.device)
        unchanged = self.unchanged(params)
        if unchanged is not None:
            params["applies"] = params.get("applies", torch.ones_like(unchanged)) & ~unchanged
        return params

    def _apply(self, batch: MultimodalBatch, params: Params, active: Tensor) -> MultimodalBatch:
        images = batch.images
        drawn = {key: value[0] if key in self.batch_wide_keys else value
                 for key, value in params.items() if key != "active"}
        if bool(active.all()):
            return batch.replace(images=self._replay(images, drawn))
        if not bool(active.any()):  # kornia cannot transform an empty batch; nothing to do anyway
            return batch
        # Transform only the active rows (a policy leaves 30-50% of a batch clean) and copy them back, so
        # inactive rows are the input's bits and cost nothing but the copy.
        rows = active.nonzero().squeeze(1)
        drawn = {key: value if key in self.batch_wide_keys else value.index_select(0, rows.to(value.device))
                 for key, value in drawn.items()}
        out = self._replay(images.index_select(0, rows), drawn)
        return batch.replace(images=images.index_copy(0, rows, out))

    def _replay(self, images: Tensor, drawn: dict[str, Tensor]) -> Tensor:
        """kornia's ``forward(images, params=...)`` with the dict rebuilt (pinned params, gate, shape)."""
        size = images.shape[0]
        drawn = dict(drawn)
        for key, constant in self.pinned_params.items():
            value = torch.as_tensor(constant, device=images.device)
            drawn[key] = value.expand(size) if value.dim() == 0 else value
        drawn[_GATE_KEY] = torch.ones(size, device=images.device)
        drawn[_SHAPE_KEY] = torch.tensor(tuple(images.shape), dtype=torch.long)
        replay = self.augmentation(self.default_range[1], 1.0, tuple(images.shape[-2:]))
        out = replay(images, params=drawn).to(images.dtype)
        if not self.clamp_output:
            return out
        if out.untyped_storage().data_ptr() == images.untyped_storage().data_ptr():
            return out.clamp(0.0, 1.0)  # never write into the caller's images
        return out.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- color


@register
class PixelColorJitter(_KorniaPixelOp):
    """Jitter brightness, contrast, saturation and hue of each image by random factors (kornia ColorJitter).

    Per sample: brightness, contrast and saturation factors drawn from [1 - s, 1 + s] and a hue shift from
    [-s/4, s/4] turns, applied in one random order per batch (torchvision's formulas: brightness
    multiplies, contrast and saturation blend with the grayscale mean / grayscale image).
    Magnitude → jitter strength s in [0, 0.4]: at magnitude 1 this is the ColorJitter(0.4, 0.4, 0.4, 0.1)
    of MoCo v2 / BYOL-style pipelines, the "Color jitter" step of the guidelines' pipeline example.
    Params: ``brightness_factor``, ``contrast_factor``, ``saturation_factor``, ``hue_factor`` [B] float;
    ``order`` [B, 4] long (kornia draws one order per call, so every row holds the same permutation).
    """

    name = "pixel_color_jitter"
    parameter = "jitter strength (factors in [1 - s, 1 + s], hue shift within s/4 turns)"
    default_range = (0.0, 0.4)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    batch_wide_keys = ("order",)

    def augmentation(self, strength, p, size):
        return K.ColorJitter(strength, strength, strength, strength / 4, p=p)


@register
class PixelBrightness(_KorniaPixelOp):
    """Scale each image's brightness by a random factor (PIL/torchvision brightness: multiply, then clip).

    Per sample: factor drawn from [1 - s, 1 + s]. Magnitude → s in [0, 0.9]: RandAugment's Brightness,
    factor 1 ± 0.9 (torchvision ``linspace(0, 0.9)`` with a random sign; Cubuk et al. 2020: [0.1, 1.9]).
    Replayed through kornia ColorJitter with only its brightness step (kornia's RandomBrightness is
    additive, not RandAugment's multiplication). Params: ``brightness_factor`` [B] float.
    """

    name = "pixel_brightness"
    parameter = "largest brightness change (factor in [1 - s, 1 + s])"
    default_range = (0.0, 0.9)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    pinned_params = {"contrast_factor": 1.0, "saturation_factor": 1.0, "hue_factor": 0.0, "order": _IN_ORDER}

    def augmentation(self, strength, p, size):
        return K.ColorJitter(brightness=strength, p=p)


@register
class PixelContrast(_KorniaPixelOp):
    """Change each image's contrast by a random factor (blend with its grayscale mean, as PIL/torchvision).

    Per sample: factor drawn from [1 - s, 1 + s]; 0 would give a flat gray image. Magnitude → s in
    [0, 0.9]: RandAugment's Contrast, factor 1 ± 0.9. Replayed through kornia ColorJitter with only its
    contrast step (kornia's RandomContrast multiplies the raw values instead). Params:
    ``contrast_factor`` [B] float.
    """

    name = "pixel_contrast"
    parameter = "largest contrast change (factor in [1 - s, 1 + s])"
    default_range = (0.0, 0.9)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    pinned_params = {"brightness_factor": 1.0, "saturation_factor": 1.0, "hue_factor": 0.0, "order": _IN_ORDER}

    def augmentation(self, strength, p, size):
        return K.ColorJitter(contrast=strength, p=p)


@register
class PixelSharpness(_KorniaPixelOp):
    """Blur or sharpen each image by blending it with a 3x3-smoothed copy (kornia RandomSharpness).

    Per sample: factor drawn from [1 - s, 1 + s]; below 1 blurs, above 1 sharpens (PIL's
    ImageEnhance.Sharpness convention; kornia leaves the one-pixel border as it was). Magnitude → s in
    [0, 0.9]: RandAugment's Sharpness, factor 1 ± 0.9. Params: ``sharpness`` [B] float.
    """

    name = "pixel_sharpness"
    parameter = "largest sharpness change (factor in [1 - s, 1 + s])"
    default_range = (0.0, 0.9)
    allowed_range = (0.0, 1.0)
    clamp_output = False

    def augmentation(self, strength, p, size):
        return K.RandomSharpness(sharpness=(1.0 - strength, 1.0 + strength), p=p)


@register
class PixelPosterize(_KorniaPixelOp):
    """Keep only the high bits of each 8-bit colour value (kornia RandomPosterize): fewer grey levels.

    Per sample: bits kept drawn uniformly from [8 - s, 8] and rounded half to even (kornia), so an image
    keeps at most 2^bits levels per channel; a draw of 8 bits leaves the sample unchanged (not marked
    augmented). Magnitude → bits removed s in [0, 4]: RandAugment's Posterize, 8 → 4 bits (torchvision
    ``8 - (arange(n) / ((n - 1) / 4)).round()``). Params: ``bits_factor`` [B] int32 (bits kept).
    """

    name = "pixel_posterize"
    parameter = "most bits removed (bits kept drawn from [8 - s, 8])"
    default_range = (0.0, 4.0)
    allowed_range = (0.0, 8.0)
    clamp_output = False

    def augmentation(self, strength, p, size):
        return K.RandomPosterize(bits=(8.0 - strength, 8.0), p=p)

    def unchanged(self, params):
        return params["bits_factor"] >= 8


@register
class PixelSolarize(_KorniaPixelOp):
    """Invert every colour value at or above a random threshold (kornia RandomSolarize).

    Per sample: threshold drawn from [1 - s, 1]; values >= threshold become 1 - value. Magnitude → s =
    1 - lowest threshold in [0, 1]: RandAugment's Solarize, threshold 1 → 0 (torchvision
    ``linspace(255, 0)``), so at magnitude 1 a sample may be inverted almost whole; a policy that wants
    milder solarising caps the magnitude (0.5 gives thresholds down to 0.5). kornia's ``additions``
    (SolarizeAdd, a different RandAugment op) is pinned to 0. Params: ``thresholds`` [B] float.
    """

    name = "pixel_solarize"
    parameter = "1 - lowest solarize threshold (threshold drawn from [1 - s, 1])"
    default_range = (0.0, 1.0)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    pinned_params = {"additions": 0.0}

    def augmentation(self, strength, p, size):
        return K.RandomSolarize(thresholds=(1.0 - strength, 1.0), additions=(0.0, 0.0), p=p)


@register
class PixelEqualize(_KorniaPixelOp):
    """Equalize each channel's histogram (kornia RandomEqualize), for each sample with probability p.

    RandAugment's Equalize has no amount to scale, so Magnitude → probability p in [0, 1].
    Params: none beyond ``active`` (kornia's per-sample coin flips are folded into it).
    """

    name = "pixel_equalize"
    parameter = "probability a sample is equalized"
    default_range = (0.0, 1.0)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    strength_is_probability = True

    def augmentation(self, strength, p, size):
        return K.RandomEqualize(p=p)


@register
class PixelGaussianBlur(_KorniaPixelOp):
    """Blur each image with a Gaussian kernel of random width (kornia RandomGaussianBlur).

    Per sample: sigma drawn from [s/20, s] pixels, one sigma for both axes; 13-tap kernel (3 sigma at
    sigma 2, shorter on images under 13 px), reflected border. A sigma below ``IDENTITY_SIGMA`` (1e-3 px,
    sigma 0 included) is the identity: the sample is left as it was and not marked augmented, so the op
    is continuous at magnitude 0. Magnitude → largest sigma s in [0, 2] px: at magnitude 1
    sigma ~ U[0.1, 2.0], the blur of SimCLR / BYOL. Params: ``sigma`` [B] float (pixels, as drawn).
    """

    name = "pixel_gaussian_blur"
    parameter = "largest blur sigma in pixels (sigma drawn from [s/20, s])"
    default_range = (0.0, 2.0)
    allowed_range = (0.0, 2.0)
    #: Below this sigma every neighbour tap weighs exp(-1 / (2 sigma^2)) = 0 in float32: a unit impulse.
    IDENTITY_SIGMA: ClassVar[float] = 1e-3

    def augmentation(self, strength, p, size):
        radius = max(0, min(6, min(size) - 1))
        return K.RandomGaussianBlur(2 * radius + 1, (strength / 20, strength), border_type="reflect", p=p)

    def unchanged(self, params):
        return params["sigma"] < self.IDENTITY_SIGMA

    def _replay(self, images, drawn):
        # kornia refuses sigma 0 and a tiny sigma's kernel is 0 / 0 = NaN; both are the identity, so a row
        # that reaches here anyway (replayed with its own `active`) is blurred by the impulse kernel.
        drawn = {**drawn, "sigma": drawn["sigma"].clamp_min(self.IDENTITY_SIGMA)}
        return super()._replay(images, drawn)


# ---------------------------------------------------------------------------------------------- geometry


@register
class PixelHorizontalFlip(_KorniaPixelOp):
    """Mirror each image left to right with probability p (kornia RandomHorizontalFlip, exact, no resampling).

    Magnitude → flip probability p in [0, 1]; p = 0.5 gives the most variety, p = 1 mirrors every image.
    WARNING: a flip swaps left and right, so it changes the answer of any question or caption about
    left/right ("what is left of the cube?"). A VQA task with spatial relations should not use this op,
    or must swap "left" and "right" in the text of the flipped samples (``active`` says which) itself.
    Params: none beyond ``active`` (kornia's per-sample coin flips are folded into it).
    """

    name = "pixel_horizontal_flip"
    parameter = "flip probability"
    default_range = (0.0, 1.0)
    allowed_range = (0.0, 1.0)
    clamp_output = False
    strength_is_probability = True

    def augmentation(self, strength, p, size):
        return K.RandomHorizontalFlip(p=p)


@register
class PixelRandomResizedCrop(_KorniaPixelOp):
    """Crop a random box of each image and resize it back to the image size (kornia RandomResizedCrop).

    Per sample: the box covers a fraction of the area drawn from [1 - s, 1] and has a width/height ratio
    within exp(±(s/0.6)·log(4/3)) (torchvision's 3/4..4/3 at magnitude 1, no distortion near 0); bilinear
    resampling through one batched warp (``cropping_mode="resample"``). Magnitude → s = 1 - smallest area
    fraction in [0, 0.6]: scale (0.4, 1) at magnitude 1, the global-crop scale of DINO. torchvision's
    default 0.08 is not used: a VLM question is about objects a small crop would cut away.
    Params: ``src`` [B, 4, 2] float (box corners x, y in input pixels: TL, TR, BR, BL), ``dst``
    [B, 4, 2] float (output corners), ``input_size`` / ``output_size`` [B, 2] long (h, w).
    """

    name = "pixel_random_resized_crop"
    parameter = "1 - smallest kept area fraction (area drawn from [1 - s, 1])"
    default_range = (0.0, 0.6)
    allowed_range = (0.0, 0.9)

    def augmentation(self, strength, p, size):
        log_ratio = math.log(4 / 3) * strength / 0.6
        return K.RandomResizedCrop(
            size, scale=(1.0 - strength, 1.0), ratio=(math.exp(-log_ratio), math.exp(log_ratio)),
            cropping_mode="resample", p=p,
        )


@register
class PixelRotate(_KorniaPixelOp):
    """Rotate each image about its centre by a random angle, zero fill (kornia RandomRotation).

    Per sample: angle drawn from [-s, s] degrees, positive counter-clockwise (as
    ``kornia.geometry.rotate``), bilinear. Magnitude → largest angle s in [0, 30] degrees: RandAugment's
    Rotate, 30 degrees (torchvision ``linspace(0, 30)``). Params: ``degrees`` [B] float.
    """

    name = "pixel_rotate"
    parameter = "largest rotation angle in degrees"
    default_range = (0.0, 30.0)
    allowed_range = (0.0, 180.0)

    def augmentation(self, strength, p, size):
        return K.RandomRotation(strength, p=p)


@register
class PixelShear(_KorniaPixelOp):
    """Shear each image along x and along y by random factors about its centre, zero fill (kornia RandomShear).

    Per sample: x and y shear angles drawn independently from [-atan(s), atan(s)] (kornia takes degrees:
    16.7 degrees at s = 0.3), i.e. shear factors up to s. Magnitude → largest shear factor s in [0, 0.3]:
    RandAugment's ShearX/ShearY, 0.3 (torchvision ``linspace(0, 0.3)``, applied as
    ``degrees(atan(v))``); unlike RandAugment, one op shears both axes.
    Params: ``center`` [B, 2] float (pixels), ``shear_x`` / ``shear_y`` [B] float (degrees).
    """

    name = "pixel_shear"
    parameter = "largest shear factor (tan of the shear angle), per axis"
    default_range = (0.0, 0.3)
    allowed_range = (0.0, 1.0)

    def augmentation(self, strength, p, size):
        degrees = math.degrees(math.atan(strength))
        return K.RandomShear((-degrees, degrees, -degrees, degrees), p=p)


@register
class PixelTranslate(_KorniaPixelOp):
    """Shift each image by a random offset along x and y, zero fill (kornia RandomTranslate).

    Per sample: offsets drawn independently from [-s, s] of the width and of the height; positive moves
    content right / down. Magnitude → largest offset s in [0, 0.45] of the image size: RandAugment's
    TranslateX/Y, 0.45 (torchvision ``150 / 331 * size`` = 0.453; timm ``translate_pct`` 0.45; the
    TF EfficientNet RandAugment's 100 px at 224 px; kornia's own RandAugment uses 0.1). Large shifts push
    objects out of frame: a VQA policy may want a lower magnitude.
    Params: ``translate_x`` / ``translate_y`` [B] float (pixels).
    """

    name = "pixel_translate"
    parameter = "largest shift as a fraction of the image size, per axis"
    default_range = (0.0, 0.45)
    allowed_range = (0.0, 1.0)

    def augmentation(self, strength, p, size):
        return K.RandomTranslate((-strength, strength), (-strength, strength), p=p)

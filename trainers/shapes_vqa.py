"""The built-in proxy task ``shapes-vqa``: visual question answering on generated shape scenes.

Each image (default 32x32 RGB, uint8) shows 1 to ``max_shapes`` shapes (circle, square, triangle) in
a few colours on a plain grey background. Each question is templated text that needs the image *and*
the text to answer:

- ``colour``:   "what color is the circle?"                  -> red / green / blue / yellow
- ``count``:    "how many squares are there?" / "how many red shapes are there?" -> 0 .. max_shapes
- ``presence``: "is there a blue triangle?"                  -> yes / no
- ``relation``: "is the red circle left or right of the green square?" -> left / right

Answers are classes of the fixed vocabulary `ANSWERS` and are computed from the example's `Scene`
(kept on the example), never read off the pixels.

Layout: the image is cut into a ``grid_cells`` x ``grid_cells`` grid (default 2x2) and every shape
lies inside its own cell (random size and position within it), so shapes never overlap (a count is
always visible) and two shapes in different cell columns are unambiguously left/right of each other.
(colour, kind) pairs are unique within a scene, so "the red circle" always names one shape.
Optional nuisance (off by default): grey clutter specks under the shapes and redundant question
prefixes, drawn from a stream of their own so that they leave scenes, questions and answers unchanged.

Planted gain (``fade``, off by default): every validation and test image is washed out — its contrast
and its colour saturation each scaled by ``1 - fade`` (torchvision's definitions: blend with the
image's mean grey, then with its greyscale) — while training images stay as drawn. The model never
sees a faded image in training, and one op of the default space simulates it (``pixel_color_jitter``,
whose contrast and saturation factors reach ``1 - 0.4``), so a search that works should find that op:
the smoke test of its power (issue 21, item 4). Fading keeps every answer (colours stay apart: hue is
unchanged). Measured (seed 0, 30 epochs, one seed only): at ``fade`` 0.6 ``none`` scores val 0.466 /
test 0.447 (0.625 / 0.635 unfaded) and ``pixel_color_jitter`` magnitude 1 at p 1 scores 0.556 / 0.520.
Positional nuisances do not work on this model: translating val/test scenes by up to 8 px cost
``none`` 0.01-0.02, and it ignores even scrambled patch order (``patches_scrambled`` robust accuracy
0.633 vs 0.635 clean), so ``pixel_translate`` has no gap to close there.

Mirroring an image left to right changes the answer of a relation question; the task declares
``("left", "right")`` as its mirror words (`TaskData.mirror_words`), so the
``multimodal_horizontal_flip`` op swaps them in question and answer and stays label-consistent.

Everything is drawn from a seed (numpy ``SeedSequence([seed, split, chunk])``): the same seed gives
the same bytes; each split has its own streams, so resizing ``train_size`` leaves val and test
unchanged, and a smaller split is a prefix of a larger one.
Drawing is one batched tensor program over every shape of every image, each evaluated on a small
window around the shape (2000 examples take a fraction of a second).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

import numpy as np
import torch

from autoaug.errors import AutoaugInputError

from .records import Example, TaskData

TASK_NAME = "shapes-vqa"

KINDS: tuple[str, ...] = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.10),
    "green": (0.12, 0.78, 0.22),
    "blue": (0.15, 0.32, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
QUESTION_TYPES: tuple[str, ...] = ("colour", "count", "presence", "relation")
GRID_CELLS = 2  # the image is a GRID_CELLS x GRID_CELLS grid of cells, one shape per cell at most
SIZE_RANGE = (0.28, 0.46)  # a shape's half-extent, as a fraction of the cell's side

TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("what color is the {kind}?", "which color does the {kind} have?"),
    "count_kind": ("how many {kind}s are there?", "count the {kind}s."),
    "count_colour": ("how many {colour} shapes are there?", "count the {colour} shapes."),
    "presence": ("is there a {colour} {kind}?", "does the image contain a {colour} {kind}?"),
    "relation": (
        "is the {colour} {kind} left or right of the {other_colour} {other_kind}?",
        "which side of the {other_colour} {other_kind} is the {colour} {kind} on?",
    ),
}

# Prefixes that carry no information: redundant question words for the text ops to learn to ignore.
FILLERS: tuple[str, ...] = (
    "look at the picture.", "in this image,", "please answer:", "tell me,", "quick question:",
    "one more thing,", "here is a scene.", "i wonder,",
)
CLUTTER_GREY = (0.45, 0.85)      # grey level of a clutter speck (achromatic: never a palette colour)
CLUTTER_HALF_EXTENT = (0.6, 1.3)  # pixels: specks of 1-3 px
FADED_SPLITS = ("val", "test")  # the splits ``fade`` washes out: held-out only, training never sees it
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision and kornia greyscale

_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
CHUNK = 64  # examples per random stream (see generate_examples)


def answer_vocabulary(max_shapes: int = 4) -> tuple[str, ...]:
    """The fixed answer classes: colours, counts 0..max_shapes, yes/no, left/right."""
    return (*COLOURS, *(str(n) for n in range(max_shapes + 1)), "yes", "no", "left", "right")


ANSWERS: tuple[str, ...] = answer_vocabulary(4)


@dataclass(frozen=True)
class Shape:
    """One shape: its kind, colour name, centre (x, y) in pixels and half-extent ``size`` in pixels."""

    kind: str
    colour: str
    x: float
    y: float
    size: float
    rgb: Optional[tuple[float, float, float]] = None  # the drawn colour; None: the palette's

    @property
    def drawn_rgb(self) -> tuple[float, float, float]:
        return self.rgb if self.rgb is not None else COLOURS[self.colour]


@dataclass(frozen=True)
class Scene:
    """What an image shows: the shapes (in drawing order) and the background grey level in [0, 1]."""

    shapes: tuple[Shape, ...]
    background: float
    image_size: int
    grid_cells: int = GRID_CELLS
    clutter: tuple[Shape, ...] = ()  # grey specks under the shapes: seen, never asked about

    def find(self, colour: Optional[str] = None, kind: Optional[str] = None) -> list[Shape]:
        return [s for s in self.shapes
                if (colour is None or s.colour == colour) and (kind is None or s.kind == kind)]

    def to_dict(self) -> dict:
        return asdict(self)


def answer(scene: Scene, question: dict) -> str:
    """The answer to a question spec (``{"type": ..., "kind"/"colour"/"other_*": ...}``) on a scene."""
    kind = question.get("type")
    if kind == "colour":
        (shape,) = scene.find(kind=question["kind"])
        return shape.colour
    if kind == "count":
        return str(len(scene.find(colour=question.get("colour"), kind=question.get("kind"))))
    if kind == "presence":
        return "yes" if scene.find(colour=question["colour"], kind=question["kind"]) else "no"
    if kind == "relation":
        (first,) = scene.find(colour=question["colour"], kind=question["kind"])
        (second,) = scene.find(colour=question["other_colour"], kind=question["other_kind"])
        return "left" if first.x < second.x else "right"
    raise ValueError(f"unknown question type {kind!r}")


# The number options of `SceneOptions` and their ranges. Unchecked, a string from --task-option or a
# negative noise would fail deep inside numpy with no option named.
NUMBER_OPTIONS: dict[str, tuple[float, float, str, str]] = {  # name: (low, high, what it is, what for)
    "pixel_noise": (0.0, 1.0, "a standard deviation", "of the pixel noise, as a fraction of 255"),
    "colour_noise": (0.0, 1.0, "a standard deviation", "of each shape's RGB values"),
    "min_contrast": (0.0, 1.0, "a number", "1: palette colours; lower: shapes fade towards the background"),
    "filler": (0.0, 1.0, "a probability", "of a redundant question prefix"),
    "fade": (0.0, 0.9, "a number", "1 - fade scales val/test contrast and saturation"),
}


@dataclass(frozen=True)
class SceneOptions:
    """What the generator draws, validated on construction (one home for both `make_shapes_vqa` and
    `generate_examples`).

    ``size_range`` is a shape's half-extent as a fraction of its cell; ``question_types`` restricts what
    is asked (it must keep ``count`` or ``presence``, which every scene can answer); ``clutter`` puts up
    to that many grey specks under the shapes of each image and ``filler`` is the probability of a
    redundant question prefix such as "look at the picture."; ``fade`` in [0, 0.9] scales the contrast
    and saturation of every val / test image by ``1 - fade`` (the planted gain: module docstring).
    """

    image_size: int = 32
    max_shapes: int = 4
    grid_cells: int = GRID_CELLS
    pixel_noise: float = 0.0
    colour_noise: float = 0.0
    min_contrast: float = 1.0
    size_range: tuple[float, float] = SIZE_RANGE
    question_types: tuple[str, ...] = QUESTION_TYPES
    clutter: int = 0
    filler: float = 0.0
    fade: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size < 12:
            raise AutoaugInputError(f"shapes-vqa: image_size must be an int >= 12, got {self.image_size!r}")
        if not isinstance(self.grid_cells, int) or not 2 <= self.grid_cells <= 4:
            raise AutoaugInputError(f"shapes-vqa: grid_cells must be an int in [2, 4], got {self.grid_cells!r}")
        cells = self.grid_cells * self.grid_cells
        if not isinstance(self.max_shapes, int) or not 1 <= self.max_shapes <= cells:
            raise AutoaugInputError(f"shapes-vqa: max_shapes must be an int in [1, {cells}], got {self.max_shapes!r}")
        clutter = self.clutter
        if isinstance(clutter, bool) or not isinstance(clutter, int) or not 0 <= clutter <= 16:
            raise AutoaugInputError(f"shapes-vqa: clutter must be an int in [0, 16], got {clutter!r}")
        for name, (low, high, noun, why) in NUMBER_OPTIONS.items():
            value = getattr(self, name)
            # bool is an int to Python, but `fade=true` from --task-option is a mistake, not 1.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise AutoaugInputError(
                    f"shapes-vqa: {name} must be {noun} in [{low:g}, {high:g}] ({why}), got {value!r}")
        # frozen: the normalised forms are set through object.__setattr__
        object.__setattr__(self, "size_range", _check_size_range(self.size_range))
        object.__setattr__(self, "question_types", _check_question_types(self.question_types))

    @classmethod
    def of(cls, options: dict) -> "SceneOptions":
        """From keyword options, with a clear error for a name that is not an option."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AutoaugInputError(f"shapes-vqa: unknown option(s) {', '.join(unknown)} "
                                    f"(options: seed, train_size, val_size, test_size, {', '.join(sorted(known))})")
        return cls(**options)

    def record(self) -> dict:
        """The options as plain JSON values (what the split record stores)."""
        return {**asdict(self), "size_range": list(self.size_range), "question_types": list(self.question_types)}


def make_shapes_vqa(seed: int = 0, train_size: int = 600, val_size: int = 1000, test_size: int = 1000,
                    **options) -> TaskData:
    """The ``shapes-vqa`` task: train / clean val / clean test splits, deterministic from ``seed``.

    ``options`` are the fields of `SceneOptions` (image size, shapes, grid, noise, question types,
    nuisance). The defaults are the measured regime of issue 10 (README, ``benchmarks/proxy_task.py``):
    600 training examples let the default tiny VLM overfit within the default 30 epochs (train - val
    gap about 0.3), so augmentation has something to regularise; 1000 val and 1000 test examples keep
    the measurement noise of one run well below the differences a search ranks.
    """
    for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
        if not isinstance(value, int) or value < 1:
            raise AutoaugInputError(f"shapes-vqa: {name} must be a positive int, got {value!r}")
    scene_options = SceneOptions.of(options)
    classes = answer_vocabulary(scene_options.max_shapes)
    splits = {
        split: generate_examples(size, seed=seed, split=split, options=scene_options, classes=classes)
        for split, size in (("train", train_size), ("val", val_size), ("test", test_size))
    }
    record = dict(seed=seed, train_size=train_size, val_size=val_size, test_size=test_size, **scene_options.record())
    return TaskData(
        name=TASK_NAME,
        classes=classes,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        image_size=scene_options.image_size,
        fingerprint=examples_fingerprint(splits),
        split_record={"method": "generated", **record},
        source=f"{TASK_NAME} (generated)",
    )


def generate_examples(
    count: int,
    seed: int = 0,
    split: str = "train",
    options: Optional[SceneOptions] = None,
    classes: Optional[tuple[str, ...]] = None,
    **option_values,
) -> list[Example]:
    """``count`` examples of one split (scenes, images and questions), deterministic from (seed, split).

    The scene options come as ``options`` (a `SceneOptions`) or as its fields by keyword
    (``image_size=48``, as this function took them before `SceneOptions`), not both.
    Examples are drawn in chunks of `CHUNK` with their own random streams, so the first ``n``
    examples are the same whatever ``count >= n`` is asked for (a smaller train split is a prefix of
    a larger one).
    """
    if options is not None and option_values:
        raise AutoaugInputError(f"shapes-vqa: give options or {', '.join(sorted(option_values))} "
                                "by keyword, not both")
    options = options if options is not None else SceneOptions.of(option_values)
    image_size, max_shapes, question_types = options.image_size, options.max_shapes, options.question_types
    clutter, filler, pixel_noise = options.clutter, options.filler, options.pixel_noise
    if split not in _SPLIT_STREAM:
        raise AutoaugInputError(f"shapes-vqa: split must be one of train, val, test; got {split!r}")
    classes = classes if classes is not None else answer_vocabulary(max_shapes)
    class_index = {name: i for i, name in enumerate(classes)}
    scenes: list[Scene] = []
    texts: list[str] = []
    specs: list[dict] = []
    noises: list[np.ndarray] = []
    for chunk in range(-(-count // CHUNK)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], chunk]))
        chunk_scenes = _sample_scenes(rng, CHUNK, image_size, max_shapes, options.grid_cells,
                                      options.colour_noise, options.min_contrast, options.size_range)
        for scene in chunk_scenes:
            question = _sample_question(rng, scene, question_types)
            template = TEMPLATES[question.pop("template")]
            texts.append(template[int(rng.integers(len(template)))].format(**question))
            specs.append(question)
        if clutter or filler:
            # Nuisance draws come from their own stream, so turning them on leaves scenes and questions as they were.
            nuisance = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM[split], chunk, 1]))
            chunk_scenes = [_with_clutter(nuisance, scene, clutter) for scene in chunk_scenes]
            prefixes = nuisance.integers(len(FILLERS), size=CHUNK)
            padded = nuisance.random(CHUNK) < filler
            first = len(texts) - CHUNK
            for j in np.flatnonzero(padded):
                texts[first + j] = f"{FILLERS[prefixes[j]]} {texts[first + j]}"
        scenes.extend(chunk_scenes)
        if pixel_noise > 0:
            noises.append(rng.standard_normal((CHUNK, 3, image_size, image_size), dtype=np.float32))
    del scenes[count:], texts[count:], specs[count:]
    images = render(scenes, image_size)
    if pixel_noise > 0:
        noise = torch.from_numpy(np.concatenate(noises)[:count]) * (pixel_noise * 255.0)
        images = (images.float() + noise).round().clamp(0, 255).to(torch.uint8)
    if options.fade and split in FADED_SPLITS:
        images = faded(images, 1.0 - options.fade)
    examples = []
    for index, (scene, text, spec) in enumerate(zip(scenes, texts, specs)):
        examples.append(Example(
            image=images[index].clone(),  # own storage: pickling one example stays small
            text=text,
            label=class_index[answer(scene, spec)],
            scene=scene,
            meta={"question": spec},
            source=f"{TASK_NAME} {split} #{index}",
        ))
    return examples


def faded(images: torch.Tensor, factor: float) -> torch.Tensor:
    """uint8 images ``[N, 3, H, W]`` with contrast, then saturation, scaled by ``factor`` in (0, 1]:
    each image is blended with its mean grey, then each pixel with its own grey (torchvision's
    ``adjust_contrast`` / ``adjust_saturation``; kornia's ColorJitter uses the same definitions)."""
    weights = torch.tensor(GREY_WEIGHTS).view(1, 3, 1, 1)
    x = images.float() / 255.0
    mean_grey = (x * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (mean_grey + factor * (x - mean_grey)).clamp(0.0, 1.0)
    grey = (x * weights).sum(1, keepdim=True)
    x = (grey + factor * (x - grey)).clamp(0.0, 1.0)
    return (x * 255.0).round().to(torch.uint8)


def _with_clutter(rng: np.random.Generator, scene: Scene, clutter: int) -> Scene:
    """The scene with 0..``clutter`` grey specks anywhere in the image (drawn under the shapes)."""
    count = int(rng.integers(clutter + 1)) if clutter else 0
    size = scene.image_size
    xy = rng.uniform(1.0, size - 1.0, size=(count, 2))
    half = rng.uniform(*CLUTTER_HALF_EXTENT, size=count)
    grey = rng.uniform(*CLUTTER_GREY, size=count)
    specks = tuple(Shape(kind="square", colour="grey", x=round(float(x), 3), y=round(float(y), 3),
                         size=round(float(h), 3), rgb=(round(float(g), 3),) * 3)
                   for (x, y), h, g in zip(xy, half, grey))
    return Scene(shapes=scene.shapes, background=scene.background, image_size=size,
                 grid_cells=scene.grid_cells, clutter=specks)


def _check_size_range(size_range) -> tuple[float, float]:
    try:
        low, high = (float(value) for value in size_range)
    except (TypeError, ValueError):
        raise AutoaugInputError(f"shapes-vqa: size_range must be two numbers, got {size_range!r}") from None
    if not 0.05 <= low <= high <= 0.5:
        raise AutoaugInputError(
            f"shapes-vqa: size_range must satisfy 0.05 <= low <= high <= 0.5 (fractions of a cell), got {size_range!r}")
    return low, high


def _check_question_types(question_types) -> tuple[str, ...]:
    chosen = (question_types,) if isinstance(question_types, str) else tuple(question_types)
    unknown = [kind for kind in chosen if kind not in QUESTION_TYPES]
    if unknown or not {"count", "presence"} & set(chosen):
        raise AutoaugInputError(
            f"shapes-vqa: question_types must be a subset of {', '.join(QUESTION_TYPES)} holding count or "
            f"presence (always answerable), got {list(chosen)!r}")
    return tuple(kind for kind in QUESTION_TYPES if kind in chosen)


# ---------------------------------------------------------------------- scenes and questions
def _sample_scenes(rng: np.random.Generator, count: int, image_size: int, max_shapes: int,
                   grid_cells: int = GRID_CELLS, colour_noise: float = 0.0,
                   min_contrast: float = 1.0, size_range: tuple[float, float] = SIZE_RANGE) -> list[Scene]:
    combos = [(colour, kind) for colour in COLOURS for kind in KINDS]
    cells = grid_cells * grid_cells
    numbers = rng.integers(1, max_shapes + 1, size=count)
    combo_order = np.argsort(rng.random((count, len(combos))), axis=1)[:, :max_shapes]
    cell_order = np.argsort(rng.random((count, cells)), axis=1)[:, :max_shapes]
    cell = image_size / grid_cells
    low, high = size_range[0] * cell, min(size_range[1] * cell, cell / 2 - 0.5)
    sizes = rng.uniform(low, high, size=(count, max_shapes))
    offsets = rng.random((count, max_shapes, 2))
    backgrounds = rng.uniform(0.05, 0.30, size=count)
    jitter = rng.normal(0.0, colour_noise, size=(count, max_shapes, 3)) if colour_noise > 0 else None
    contrast = rng.uniform(min_contrast, 1.0, size=(count, max_shapes)) if min_contrast < 1 else None
    if contrast is not None:
        palette = np.array([COLOURS[colour] for colour, _ in combos])            # [combos, 3]
        base = palette[combo_order]                                              # [count, max_shapes, 3]
        drawn = backgrounds[:, None, None] + contrast[..., None] * (base - backgrounds[:, None, None])
        jitter = drawn - base + (0.0 if jitter is None else jitter)
    # Centres stay inside the cell by at least the half-extent: shapes never cross a cell border.
    rows, cols = cell_order // grid_cells, cell_order % grid_cells
    xs = cols * cell + sizes + offsets[..., 0] * (cell - 2 * sizes)
    ys = rows * cell + sizes + offsets[..., 1] * (cell - 2 * sizes)
    scenes = []
    for i in range(count):
        shapes = tuple(
            Shape(kind=combos[c][1], colour=combos[c][0], x=round(float(xs[i, j]), 3),
                  y=round(float(ys[i, j]), 3), size=round(float(sizes[i, j]), 3),
                  rgb=None if jitter is None else tuple(
                      round(float(np.clip(v + e, 0.0, 1.0)), 3)
                      for v, e in zip(COLOURS[combos[c][0]], jitter[i, j])))
            for j, c in enumerate(combo_order[i, : numbers[i]])
        )
        scenes.append(Scene(shapes=shapes, background=round(float(backgrounds[i]), 3),
                            image_size=image_size, grid_cells=grid_cells))
    return scenes


def _sample_question(rng: np.random.Generator, scene: Scene,
                     question_types: tuple[str, ...] = QUESTION_TYPES) -> dict:
    """A question spec (with its template family) of one of ``question_types`` that the scene can
    answer unambiguously (count and presence are always feasible, so at least one of them is asked for)."""
    unique_kinds = [k for k in KINDS if len(scene.find(kind=k)) == 1]
    cell = scene.image_size / scene.grid_cells
    pairs = [(a, b) for a in scene.shapes for b in scene.shapes
             if int(a.x // cell) != int(b.x // cell)]
    feasible = [kind for kind in ("count", "presence") if kind in question_types]
    if unique_kinds and "colour" in question_types:
        feasible.append("colour")
    if pairs and "relation" in question_types:
        feasible.append("relation")
    kind = sorted(feasible, key=QUESTION_TYPES.index)[int(rng.integers(len(feasible)))]
    if kind == "colour":
        return {"type": "colour", "template": "colour",
                "kind": unique_kinds[int(rng.integers(len(unique_kinds)))]}
    if kind == "count":
        if rng.random() < 0.5:
            return {"type": "count", "template": "count_kind", "kind": KINDS[int(rng.integers(len(KINDS)))]}
        colours = list(COLOURS)
        return {"type": "count", "template": "count_colour",
                "colour": colours[int(rng.integers(len(colours)))]}
    if kind == "presence":
        present = {(s.colour, s.kind) for s in scene.shapes}
        want_yes = rng.random() < 0.5
        pool = sorted(present) if want_yes else \
            [(c, k) for c in COLOURS for k in KINDS if (c, k) not in present]
        colour, shape_kind = pool[int(rng.integers(len(pool)))]
        return {"type": "presence", "template": "presence", "colour": colour, "kind": shape_kind}
    first, second = pairs[int(rng.integers(len(pairs)))]
    return {"type": "relation", "template": "relation", "colour": first.colour, "kind": first.kind,
            "other_colour": second.colour, "other_kind": second.kind}


# ---------------------------------------------------------------------- drawing
def render(scenes: list[Scene], image_size: int = 32) -> torch.Tensor:
    """Draw scenes as uint8 images ``[N, 3, S, S]`` in one batched tensor program.

    A pixel belongs to a shape when its centre does: circle ``|p - c| <= size``, square
    ``max(|dx|, |dy|) <= size``, upward triangle (apex at ``y - size``, base at ``y + size``)
    ``|dy| <= size and |dx| <= (dy + size) / 2``. Each shape is evaluated only on the small window
    around it, and all windows of all images at once; shapes of one scene must not overlap (the
    generator guarantees it), as overlapping pixels would be painted in no defined order.
    """
    count = len(scenes)
    background = _to_uint8(torch.tensor([scene.background for scene in scenes], dtype=torch.float32))
    images = background.view(count, 1, 1, 1).expand(count, image_size, image_size, 3).clone()  # [N, H, W, 3]
    for layer in ("clutter", "shapes"):  # clutter first: a shape paints over any speck it meets
        _paint(images, [(i, shape) for i, scene in enumerate(scenes) for shape in getattr(scene, layer)],
               image_size)
    return images.permute(0, 3, 1, 2).contiguous()


def _paint(images: torch.Tensor, owned: list[tuple[int, Shape]], image_size: int) -> None:
    """Paint ``(image index, shape)`` pairs into ``images`` ``[N, H, W, 3]`` (uint8, in place)."""
    flat = [shape for _, shape in owned]
    if flat:
        owner = torch.tensor([i for i, _ in owned])
        geometry = torch.tensor([(s.x, s.y, s.size) for s in flat], dtype=torch.float32)
        kinds = torch.tensor([KINDS.index(s.kind) for s in flat])
        colours = _to_uint8(torch.tensor([s.drawn_rgb for s in flat], dtype=torch.float32))
        x, y, size = geometry.unbind(1)
        window = int(math.ceil(2 * float(size.max()))) + 2
        offsets = torch.arange(window)
        cols = (x - size).floor().long().unsqueeze(1) + offsets          # [S, w] pixel columns
        rows = (y - size).floor().long().unsqueeze(1) + offsets          # [S, w] pixel rows
        dx = (cols + 0.5 - x.unsqueeze(1)).unsqueeze(1)                   # [S, 1, w]
        dy = (rows + 0.5 - y.unsqueeze(1)).unsqueeze(2)                   # [S, w, 1]
        size = size.view(-1, 1, 1)
        circle = dx.square() + dy.square() <= size.square()
        square = (dx.abs() <= size) & (dy.abs() <= size)
        triangle = (dy.abs() <= size) & (dx.abs() <= (dy + size) / 2)
        inside = torch.stack((circle, square, triangle))[kinds, torch.arange(len(flat))]  # [S, w, w]
        inside &= ((rows >= 0) & (rows < image_size)).unsqueeze(2)
        inside &= ((cols >= 0) & (cols < image_size)).unsqueeze(1)
        pixel = (owner.view(-1, 1, 1) * image_size + rows.clamp(0, image_size - 1).unsqueeze(2)) \
            * image_size + cols.clamp(0, image_size - 1).unsqueeze(1)
        shape_of = torch.arange(len(flat)).view(-1, 1, 1).expand_as(inside)
        images.view(-1, 3)[pixel[inside]] = colours[shape_of[inside]]


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def examples_fingerprint(splits: dict[str, list[Example]]) -> str:
    """sha256 over every example's split, image bytes, text and label, in order."""
    digest = hashlib.sha256()
    for split in sorted(splits):
        for example in splits[split]:
            digest.update(split.encode())
            digest.update(example.image.numpy().tobytes())
            digest.update(example.text.encode())
            digest.update(str(example.label).encode())
    return digest.hexdigest()


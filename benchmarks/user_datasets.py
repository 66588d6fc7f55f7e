"""Two image-question data sets in the Hugging Face Parquet layout a user would bring (`--data`), made
to be different in kind from shapes-vqa (one centred shape, its colour / shape / size) and from each other:

- ``counting``: 2-7 small blobs of three colours scattered on a noisy background; the question asks how
  many blobs of one colour there are (answers 0-4). The answer needs both modalities (which colour is in
  the text, the blobs are in the image) and is invariant to flips and translations (as long as nothing
  leaves the frame) but not to colour changes or occlusion.
- ``stripes``: the image's left and right halves each carry a stripe pattern (horizontal, vertical or
  diagonal, random phase and contrast, noise); the question asks about one half. Left and right are in
  the question: a horizontal flip swaps the halves and a rotation changes the orientation, so geometry
  ops that are harmless on the other sets change the answer here.

    .venv/bin/python benchmarks/user_datasets.py --out data/                 # writes counting.parquet, stripes.parquet
    .venv/bin/autoaug search --space vlm_default --data data/counting.parquet --name counting --trials 12

Sizes as the built-in task's (600 train, 1000 val, 1000 test by default), 32 x 32 RGB PNGs, columns
``image`` (struct bytes/path), ``text``, ``label``, ``split``. Deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

SIZE = 32
BLOB_COLOURS = {"red": (215, 40, 40), "green": (40, 180, 60), "blue": (45, 70, 215)}
COUNT_QUESTIONS = ("how many {c} blobs are there?", "count the {c} spots.", "number of {c} dots in the picture?")
ORIENTATIONS = ("horizontal", "vertical", "diagonal")
STRIPE_QUESTIONS = ("which way do the stripes on the {side} run?", "stripe direction, {side} half?",
                    "how are the {side} stripes oriented?")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def counting_example(rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """Blobs of 3x3 to 4x4 pixels at non-overlapping places; asks the count of one colour (0-4)."""
    image = np.clip(rng.normal(110, 25, (SIZE, SIZE, 3)), 0, 255)
    counts = {colour: int(rng.integers(0, 5)) for colour in BLOB_COLOURS}
    while sum(counts.values()) < 2:
        counts[str(rng.choice(list(BLOB_COLOURS)))] += 1
    taken = np.zeros((SIZE, SIZE), dtype=bool)
    for colour, count in counts.items():
        placed = 0
        while placed < count:
            side = int(rng.integers(3, 5))
            y, x = (int(v) for v in rng.integers(2, SIZE - side - 2, size=2))
            if taken[y - 1:y + side + 1, x - 1:x + side + 1].any():
                continue
            taken[y:y + side, x:x + side] = True
            shade = np.array(BLOB_COLOURS[colour]) + rng.normal(0, 15, 3)
            image[y:y + side, x:x + side] = shade
            placed += 1
    asked = str(rng.choice(list(BLOB_COLOURS)))
    question = str(rng.choice(COUNT_QUESTIONS)).format(c=asked)
    return image.astype(np.uint8), question, str(counts[asked])


def _stripes(rng: np.random.Generator, orientation: str, width: int) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:width]
    coordinate = {"horizontal": y, "vertical": x, "diagonal": x + y}[orientation]
    period = float(rng.uniform(3.0, 6.0))
    wave = np.sin(2 * np.pi * coordinate / period + rng.uniform(0, 2 * np.pi))
    contrast = float(rng.uniform(40, 90))
    return 128 + contrast * wave


def stripes_example(rng: np.random.Generator) -> tuple[np.ndarray, str, str]:
    """Left and right halves with independent stripe orientations; asks about one half."""
    half = SIZE // 2
    left, right = (str(rng.choice(ORIENTATIONS)) for _ in range(2))
    grey = np.concatenate([_stripes(rng, left, half), _stripes(rng, right, SIZE - half)], axis=1)
    tint = rng.uniform(0.7, 1.3, size=3)
    image = np.clip(grey[..., None] * tint + rng.normal(0, 20, (SIZE, SIZE, 3)), 0, 255)
    side = str(rng.choice(("left", "right")))
    question = str(rng.choice(STRIPE_QUESTIONS)).format(side=side)
    return image.astype(np.uint8), question, left if side == "left" else right


MAKERS: dict[str, Callable[[np.random.Generator], tuple[np.ndarray, str, str]]] = {
    "counting": counting_example, "stripes": stripes_example}


def write(name: str, path: Path, seed: int, sizes: tuple[int, int, int]) -> Path:
    rng = np.random.default_rng([seed, list(MAKERS).index(name)])
    rows = {"image": [], "text": [], "label": [], "split": []}
    for split, size in zip(("train", "val", "test"), sizes):
        for _ in range(size):
            pixels, text, label = MAKERS[name](rng)
            rows["image"].append({"bytes": _png(pixels), "path": None})
            rows["text"].append(text)
            rows["label"].append(label)
            rows["split"].append(split)
    pq.write_table(pa.table(rows), path)
    return path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default="600,1000,1000", help="train,val,test examples")
    parser.add_argument("--only", choices=sorted(MAKERS), default=None)
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(value) for value in args.sizes.split(","))
        if len(sizes) != 3 or min(sizes) < 1:
            raise ValueError
    except ValueError:
        parser.error(f"--sizes: expected three positive integers train,val,test, got {args.sizes!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ([args.only] if args.only else MAKERS):
        path = write(name, args.out / f"{name}.parquet", args.seed, sizes)
        print(f"{name}: {path} ({sum(sizes)} examples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

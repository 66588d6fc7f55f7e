"""shapes-vqa's task options: question types, shape sizes, clutter specks, filler words and the
planted ``fade`` of the held-out splits.

(Determinism, answers and rendering of the default task are covered in test_trainers_data.py.)
"""

from __future__ import annotations

import pytest
import torch

from autoaug.errors import AutoaugInputError
from autoaug.trainers.shapes_vqa import (
    CLUTTER_GREY, FILLERS, QUESTION_TYPES, SceneOptions, faded, generate_examples, make_shapes_vqa, render,
)
from autoaug.trainers.tasks import load_task

SMALL = dict(seed=0, train_size=200, val_size=20, test_size=20)


def question_types(task) -> set[str]:
    return {example.meta["question"]["type"] for example in task.train}


def test_question_types_restrict_what_is_asked():
    assert question_types(make_shapes_vqa(**SMALL)) == set(QUESTION_TYPES)
    assert question_types(make_shapes_vqa(**SMALL, question_types=("colour", "count"))) == {"colour", "count"}


def test_size_range_sets_the_half_extent_as_a_fraction_of_the_cell():
    task = make_shapes_vqa(**SMALL, grid_cells=2, size_range=(0.2, 0.3))
    cell = task.image_size / 2
    sizes = [shape.size for example in task.train for shape in example.scene.shapes]
    assert min(sizes) >= 0.2 * cell - 1e-3 and max(sizes) <= 0.3 * cell + 1e-3


def test_clutter_and_filler_leave_scenes_questions_and_answers_as_they_were():
    plain = make_shapes_vqa(**SMALL)
    noisy = make_shapes_vqa(**SMALL, clutter=5, filler=0.5)
    assert [e.scene.shapes for e in noisy.train] == [e.scene.shapes for e in plain.train]
    assert [e.label for e in noisy.train] == [e.label for e in plain.train]
    prefixed = 0
    for clean, example in zip(plain.train, noisy.train):
        if example.text != clean.text:
            prefix = example.text[: -len(clean.text) - 1]
            assert example.text.endswith(" " + clean.text) and prefix in FILLERS
            prefixed += 1
    # 200 coin flips at p = 0.5: SD 7.1; 4 SD either side of 100
    assert 100 - 29 <= prefixed <= 100 + 29
    specks = [len(e.scene.clutter) for e in noisy.train]
    assert max(specks) <= 5 and sum(specks) > 0 and all(not e.scene.clutter for e in plain.train)


def test_clutter_is_grey_and_drawn_under_the_shapes():
    noisy = make_shapes_vqa(**SMALL, clutter=8)
    for example in noisy.train[:50]:
        for speck in example.scene.clutter:
            red, green, blue = speck.rgb
            assert red == green == blue and CLUTTER_GREY[0] <= red <= CLUTTER_GREY[1]
        # every shape's own pixels are as in the image rendered without clutter
        clean = render([example.scene.__class__(shapes=example.scene.shapes, background=example.scene.background,
                                                image_size=example.scene.image_size,
                                                grid_cells=example.scene.grid_cells)], example.image.shape[-1])[0]
        background = torch.tensor(round(example.scene.background * 255), dtype=torch.uint8)
        shape_pixels = (clean != background).any(0)
        assert torch.equal(example.image[:, shape_pixels], clean[:, shape_pixels])


def test_options_off_give_the_same_bytes():
    assert make_shapes_vqa(**SMALL).fingerprint == make_shapes_vqa(**SMALL, clutter=0, filler=0.0, fade=0.0).fingerprint
    assert make_shapes_vqa(**SMALL).fingerprint != make_shapes_vqa(**SMALL, clutter=2).fingerprint


@pytest.mark.parametrize("options, message", [
    ({"question_types": ("colour", "relation")}, "question_types must be a subset"),
    ({"question_types": ("count", "size")}, "question_types must be a subset"),
    ({"size_range": (0.4, 0.2)}, "size_range must satisfy"),
    ({"size_range": "big"}, "size_range must be two numbers"),
    ({"clutter": -1}, r"clutter must be an int in \[0, 16\]"),
    ({"filler": 1.5}, r"filler must be a probability in \[0, 1\]"),
    ({"max_shapes": 5}, r"max_shapes must be an int in \[1, 4\]"),
    ({"image_size": 8}, "image_size must be an int >= 12"),
    ({"fade": 0.95}, r"fade must be a number in \[0, 0.9\]"),
    ({"fade": -0.1}, r"fade must be a number in \[0, 0.9\]"),
    ({"fade": True}, r"fade must be a number in \[0, 0.9\]"),
    ({"clutterr": 1}, "unknown option\\(s\\) clutterr \\(options: seed, train_size"),
    # the three noise options were unchecked: a string reached numpy (TypeError), a negative SD ValueError
    ({"pixel_noise": "abc"}, r"pixel_noise must be a standard deviation in \[0, 1\]"),
    ({"pixel_noise": -0.1}, r"pixel_noise must be a standard deviation in \[0, 1\]"),
    ({"colour_noise": -0.05}, r"colour_noise must be a standard deviation in \[0, 1\]"),
    ({"min_contrast": 1.5}, r"min_contrast must be a number in \[0, 1\]"),
    ({"min_contrast": True}, r"min_contrast must be a number in \[0, 1\]"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(AutoaugInputError, match=f"shapes-vqa: {message}"):
        make_shapes_vqa(**SMALL, **options)


def test_generate_examples_takes_the_options_as_one_object_or_by_keyword():
    # Catches: the keyword form of generate_examples (its signature before SceneOptions) dropped or
    # silently ignored (default scenes), and both forms at once accepted with one of them lost.
    by_keyword = generate_examples(8, seed=2, split="val", image_size=48, max_shapes=2, clutter=3)
    as_object = generate_examples(8, seed=2, split="val", options=SceneOptions(image_size=48, max_shapes=2, clutter=3))
    assert [(e.text, e.label, e.scene) for e in by_keyword] == [(e.text, e.label, e.scene) for e in as_object]
    assert all(torch.equal(a.image, b.image) for a, b in zip(by_keyword, as_object))
    assert by_keyword[0].image.shape == (3, 48, 48) and all(len(e.scene.shapes) <= 2 for e in by_keyword)
    with pytest.raises(AutoaugInputError, match="shapes-vqa: give options or image_size by keyword, not both"):
        generate_examples(4, options=SceneOptions(), image_size=48)
    with pytest.raises(AutoaugInputError, match=r"shapes-vqa: max_shapes must be an int in \[1, 4\]"):
        generate_examples(4, max_shapes=9)


def test_task_options_from_the_command_line_reach_the_generator():
    # `--task-option KEY=VALUE` is parsed by cli.parse_options (JSON where it parses) and handed to
    # make_shapes_vqa through load_task: lists become tuples and strings stay one-line errors.
    # Catches: a list size_range or a single question type string refused or misread.
    from autoaug.cli import parse_options

    options = parse_options(["size_range=[0.2,0.3]", "question_types=count", "pixel_noise=0.05", "fade=0.5"])
    task = load_task("shapes-vqa", seed=0, train_size=16, val_size=8, test_size=8, **options)
    assert task.split_record["size_range"] == [0.2, 0.3] and task.split_record["question_types"] == ["count"]
    assert task.split_record["pixel_noise"] == 0.05 and task.split_record["fade"] == 0.5
    with pytest.raises(AutoaugInputError, match=r"shapes-vqa: pixel_noise must be a standard deviation"):
        load_task("shapes-vqa", seed=0, train_size=16, val_size=8, test_size=8, **parse_options(["pixel_noise=lots"]))


FADE = 0.6


def _grey_spread(image: torch.Tensor) -> float:
    """Standard deviation of the image's grey levels (what contrast scales)."""
    grey = (image.float() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0)
    return float(grey.std())


def _chroma(image: torch.Tensor) -> float:
    """Mean distance of each pixel's colour from its own grey (what saturation scales)."""
    x = image.float()
    return float((x - x.mean(0, keepdim=True)).abs().mean())


def test_fade_washes_out_val_and_test_and_leaves_train_as_it_was():
    # Catches: a fade applied to train too (the nuisance must be one training never sees), to no split,
    # to only one of val / test, or one that changes questions or answers.
    plain = make_shapes_vqa(**SMALL)
    washed = load_task("shapes-vqa", seed=0, train_size=200, val_size=20, test_size=20, fade=FADE)
    assert all(torch.equal(a.image, b.image) for a, b in zip(plain.train, washed.train))
    for split in ("val", "test"):
        pairs = list(zip(plain.split(split), washed.split(split)))
        assert [(a.text, a.label, a.scene) for a, _ in pairs] == [(b.text, b.label, b.scene) for _, b in pairs]
        for clean, faint in pairs:
            assert torch.equal(faint.image, faded(clean.image.unsqueeze(0), 1 - FADE)[0])
            # contrast scales the grey spread by 1 - fade and saturation keeps it (it blends towards
            # each pixel's own grey); 8-bit rounding moves it by well under a grey level
            assert _grey_spread(faint.image) == pytest.approx((1 - FADE) * _grey_spread(clean.image), abs=0.5)
            # chroma is scaled twice (contrast, then saturation), both by 1 - fade
            assert _chroma(faint.image) == pytest.approx((1 - FADE) ** 2 * _chroma(clean.image), abs=0.5)


def test_faded_keeps_a_grey_image_grey_and_factor_one_is_the_identity():
    # Catches: a fade that shifts brightness (blending towards black or a fixed grey instead of the
    # image's own mean grey), or one that moves pixels at factor 1.
    images = make_shapes_vqa(**SMALL).val[0].image.unsqueeze(0)
    assert torch.equal(faded(images, 1.0), images)
    grey = torch.full((1, 3, 4, 4), 90, dtype=torch.uint8)
    assert torch.equal(faded(grey, 0.3), grey)


def test_fade_is_deterministic_from_the_data_seed():
    # Catches: a fade drawn from a global or unseeded generator (it is a fixed factor: same bytes twice).
    first, again = (make_shapes_vqa(**SMALL, fade=FADE) for _ in range(2))
    assert first.fingerprint == again.fingerprint != make_shapes_vqa(**SMALL).fingerprint
    assert first.split_record["fade"] == FADE

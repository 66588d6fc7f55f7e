"""multimodal_horizontal_flip: the image is mirrored and left/right are swapped in question and answer.

The shared rules (identity at magnitude 0, replay, inactive samples untouched...) are checked for every
op in test_op_contract.py on a batch that declares no swaps; here the same rules are checked with swaps
declared, plus the swap itself, and end to end on shapes-vqa relation questions.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from autoaug import ops
from autoaug.batch import MirrorSwaps
from autoaug.errors import BatchValidationError
from autoaug.ops.mirror import swap_columns, swap_values
from autoaug.synthetic import CLS_ID, PAD_ID, SEP_ID, example_batch
from conftest import assert_batches_equal, generator

LEFT, RIGHT = 40, 41          # token ids standing for "left" / "right"
LEFT_CLASS, RIGHT_CLASS = 1, 3
SWAPS = MirrorSwaps(text_pairs=((LEFT, RIGHT),), label_pairs=((LEFT_CLASS, RIGHT_CLASS),))


def mirror_batch(batch_size: int = 8, device: str = "cpu", swaps: MirrorSwaps | None = SWAPS):
    """A pixel-stage batch whose every text holds "left" at slot 1 and "right" at slot 2, and whose
    labels alternate between the classes "left" and "right"."""
    batch = example_batch(batch_size=batch_size, grid=4, patch_dim=12, text_len=12, image_size=32, seed=0)
    # [CLS] left right w w w w w w [SEP] [PAD] [PAD], the words drawn apart from the two swapped ids
    words = torch.randint(50, 128, (batch_size, 12), generator=torch.Generator().manual_seed(1))
    text_ids = torch.cat([torch.tensor([[CLS_ID, LEFT, RIGHT]]).expand(batch_size, -1), words[:, 3:9],
                          torch.tensor([[SEP_ID, PAD_ID, PAD_ID]]).expand(batch_size, -1)], 1)
    text_mask = text_ids != PAD_ID
    classes = torch.tensor([LEFT_CLASS, RIGHT_CLASS] * (batch_size // 2) + [LEFT_CLASS] * (batch_size % 2))
    batch = dataclasses.replace(batch, text_ids=text_ids, text_mask=text_mask, text_special=None,
                                labels=batch.soft_labels(classes, batch.labels.shape[1]), mirror_swaps=swaps)
    return batch.to(device)


def test_registered_with_its_metadata():
    row = ops.op_class("multimodal_horizontal_flip").describe()
    assert (row["stage"], row["modality"], row["magnitude_range"], row["mixes_labels"]) == \
        ("pixel", "cross", [0.0, 1.0], False)


def test_flips_image_and_swaps_words_and_answers(device):
    batch = mirror_batch(device=device)
    out = ops.get("multimodal_horizontal_flip")(batch, 1.0, generator(0))  # p = 1: every sample
    assert torch.equal(out.images, batch.images.flip(-1))
    assert (out.text_ids[:, 1] == RIGHT).all() and (out.text_ids[:, 2] == LEFT).all()
    others = torch.ones_like(batch.text_ids, dtype=torch.bool)
    others[:, 1:3] = False
    assert torch.equal(out.text_ids[others], batch.text_ids[others])
    assert torch.equal(out.labels[:, LEFT_CLASS], batch.labels[:, RIGHT_CLASS])
    assert torch.equal(out.labels[:, RIGHT_CLASS], batch.labels[:, LEFT_CLASS])
    untouched = [c for c in range(batch.labels.shape[1]) if c not in (LEFT_CLASS, RIGHT_CLASS)]
    assert torch.equal(out.labels[:, untouched], batch.labels[:, untouched])
    assert out.augmented.all()


def test_mixed_label_weights_move_with_their_classes():
    batch = mirror_batch(batch_size=2)
    labels = torch.zeros_like(batch.labels)
    labels[:, LEFT_CLASS], labels[:, 0] = 0.7, 0.3
    out = ops.get("multimodal_horizontal_flip")(batch.replace(labels=labels), 1.0, generator(0))
    assert torch.equal(out.labels[:, RIGHT_CLASS], torch.full((2,), 0.7))
    assert torch.equal(out.labels[:, 0], torch.full((2,), 0.3)) and (out.labels[:, LEFT_CLASS] == 0).all()


def test_special_and_padding_positions_are_never_rewritten():
    batch = mirror_batch()
    text_ids = batch.text_ids.clone()
    text_ids[:, 9] = LEFT  # the id of "left" on a position marked special (the [SEP] slot)
    special = torch.zeros_like(text_ids, dtype=torch.bool)
    special[:, 9] = True
    batch = batch.replace(text_ids=text_ids, text_special=special)
    out = ops.get("multimodal_horizontal_flip")(batch, 1.0, generator(0))
    assert (out.text_ids[:, 9] == LEFT).all() and (out.text_ids[:, 1] == RIGHT).all()


def test_dropped_positions_are_never_rewritten():
    """Only ``text_content`` (present and not special) is edited: a dropped "left" stays as it was."""
    batch = mirror_batch()
    text_mask = batch.text_mask.clone()
    text_mask[:, 1] = False  # "left" dropped by an earlier op, not special
    out = ops.get("multimodal_horizontal_flip")(batch.replace(text_mask=text_mask), 1.0, generator(0))
    assert (out.text_ids[:, 1] == LEFT).all() and (out.text_ids[:, 2] == LEFT).all()


def test_magnitude_zero_is_the_identity():
    batch = mirror_batch()
    assert_batches_equal(ops.get("multimodal_horizontal_flip")(batch, 0.0, generator(0)), batch)


def test_flip_probability_is_the_magnitude():
    # 4000 coin flips at p = 0.3: SD of the rate is sqrt(0.3 * 0.7 / 4000) = 0.0072; allow 4 SD.
    batch = mirror_batch(batch_size=4000)
    params = ops.get("multimodal_horizontal_flip").sample_params(batch, 0.3, generator(5))
    assert abs(params["active"].float().mean().item() - 0.3) < 4 * 0.0073


def test_inactive_samples_keep_image_text_and_label(device):
    batch = mirror_batch(device=device)
    active = torch.tensor([True, False] * 4, device=device)
    out = ops.get("multimodal_horizontal_flip")(batch, 1.0, generator(1), active=active)
    for field in ("images", "text_ids", "labels"):
        assert torch.equal(getattr(out, field)[~active], getattr(batch, field)[~active])
        assert not torch.equal(getattr(out, field)[active], getattr(batch, field)[active])
    assert torch.equal(out.augmented, active)


def test_replay_is_exact_and_the_input_is_not_mutated():
    op = ops.get("multimodal_horizontal_flip")
    batch = mirror_batch()
    snapshot = {name: tensor.clone() for name, tensor in batch.tensors().items()}
    params = op.sample_params(batch, 0.5, generator(3))
    first = op.apply(batch, params)
    assert_batches_equal(first, op.apply(batch, params))
    assert_batches_equal(first, op(batch, 0.5, generator(3)))
    assert 0 < int(params["active"].sum()) < batch.batch_size  # p = 0.5 flipped some, not all
    for name, tensor in batch.tensors().items():
        assert torch.equal(tensor, snapshot[name]), f"the op mutated its input's {name}"


def test_without_declared_swaps_only_the_image_is_mirrored():
    batch = mirror_batch(swaps=None)
    out = ops.get("multimodal_horizontal_flip")(batch, 1.0, generator(0))
    assert torch.equal(out.images, batch.images.flip(-1))
    assert torch.equal(out.text_ids, batch.text_ids) and torch.equal(out.labels, batch.labels)


def test_swap_helpers_are_permutations():
    values = torch.tensor([[5, 6, 7, 6, 5]])
    assert swap_values(values, ((5, 6),)).tolist() == [[6, 5, 7, 5, 6]]
    matrix = torch.arange(8.0).view(2, 4)
    assert swap_columns(matrix, ((0, 3),)).tolist() == [[3.0, 1.0, 2.0, 0.0], [7.0, 5.0, 6.0, 4.0]]


@pytest.mark.parametrize("pairs, match", [
    (((1, 1),), "appears twice"),
    (((1, 2), (2, 3)), "appears twice"),
    (((1, -2),), "non-negative ints"),
    (((1, 2, 3),), "pairs"),
])
def test_bad_swap_declarations_are_clear_errors(pairs, match):
    with pytest.raises(BatchValidationError, match=match):
        MirrorSwaps(text_pairs=pairs)


def test_a_batch_rejects_swaps_outside_its_classes_or_vocabulary():
    with pytest.raises(BatchValidationError, match=r"label_pairs: class indices must be < C=5"):
        mirror_batch(swaps=MirrorSwaps(label_pairs=((1, 9),)))
    with pytest.raises(BatchValidationError, match=r"text_pairs: token ids must be < vocab_size=128"):
        mirror_batch(swaps=MirrorSwaps(text_pairs=((1, 500),)))


# ---------------------------------------------------------------------- end to end on shapes-vqa
def test_on_shapes_vqa_a_flipped_relation_question_stays_true():
    """Flip every sample of a shapes-vqa batch: the text reads with left and right exchanged, and the
    label is the answer that the *mirrored scene* gives to the original question."""
    from autoaug.trainers.prepared import PreparedTask
    from autoaug.trainers.shapes_vqa import Scene, Shape, answer, make_shapes_vqa

    task = make_shapes_vqa(seed=0, train_size=64, val_size=8, test_size=8, question_types=("relation", "count"))
    prepared = PreparedTask.build(task)
    tokenizer = prepared.tokenizer
    swaps = prepared.mirror_swaps
    assert swaps.text_pairs == ((tokenizer.token_id("left"), tokenizer.token_id("right")),)
    assert swaps.label_pairs == ((task.classes.index("left"), task.classes.index("right")),)

    batch = next(iter(prepared.batches("train", 64)))
    out = ops.get("multimodal_horizontal_flip")(batch, 1.0, generator(0))
    relation = [i for i, example in enumerate(task.train) if example.meta["question"]["type"] == "relation"]
    assert len(relation) >= 10
    texts = tokenizer.decode(out.text_ids)
    for index in relation:
        example = task.train[index]
        expected_text = re.sub(r"\b(left|right)\b", lambda m: {"left": "right", "right": "left"}[m.group(1)],
                               tokenizer.decode(batch.text_ids[index:index + 1])[0])
        assert texts[index] == expected_text
        scene: Scene = example.scene
        mirrored = dataclasses.replace(scene, shapes=tuple(
            dataclasses.replace(shape, x=scene.image_size - shape.x) for shape in scene.shapes))
        assert isinstance(mirrored.shapes[0], Shape)
        expected = answer(mirrored, example.meta["question"])
        assert task.classes[int(out.labels[index].argmax())] == expected
        assert expected != task.classes[example.label]  # a mirror always changes a relation answer


def test_a_task_declares_only_the_swaps_its_tokenizer_and_classes_can_carry():
    import dataclasses as dc

    from autoaug.trainers.shapes_vqa import make_shapes_vqa
    from autoaug.trainers.tokenizer import TextTokenizer

    task = make_shapes_vqa(seed=0, train_size=64, val_size=8, test_size=8)
    words = TextTokenizer.fit(task.texts("train"))
    left, right = words.token_id("left"), words.token_id("right")
    assert task.mirror_swaps(words) == MirrorSwaps(((left, right),), ((task.classes.index("left"),
                                                                        task.classes.index("right")),))
    # a word the tokenizer does not know as one token, or a class the task does not have, is left out
    other = dc.replace(task, mirror_words=(("left", "right"), ("east", "west")), classes=task.classes[:-2])
    assert other.mirror_swaps(words) == MirrorSwaps(text_pairs=((left, right),))
    # "left" never occurs as one word here, so no BPE merge can make it one token (a corpus where it
    # could would be flaky: the library breaks ties between equally frequent merges in hash order)
    pieces = TextTokenizer.fit(["le ft ri ght"] * 3, kind="bpe", vocab_size=40)
    assert pieces.single_token_id("left") is None
    assert dc.replace(task, mirror_words=()).mirror_swaps(words) == MirrorSwaps()

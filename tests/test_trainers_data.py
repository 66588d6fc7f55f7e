"""The proxy task's data: the shapes-vqa generator, the tokenizer, the Parquet / WebDataset readers
and the collate step."""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from autoaug.batch import MultimodalBatch
from autoaug.errors import AutoaugInputError
from autoaug.trainers import data as data_module
from autoaug.trainers.data import Collator, Example, load_data, load_task, load_task_or_data, to_batch
from autoaug.trainers.shapes_vqa import (
    ANSWERS,
    COLOURS,
    KINDS,
    generate_examples,
    make_shapes_vqa,
    render,
)
from autoaug.trainers.tokenizer import TextTokenizer


@contextlib.contextmanager
def bad_input(match: str):
    """Expect an AutoaugInputError whose one-line message matches ``match``."""
    with pytest.raises(AutoaugInputError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


# ====================================================================== shapes-vqa
def _independent_answer(text: str, scene) -> str:
    """Answer a question by parsing its text (not the generator's spec) against the scene."""
    colour = "(red|green|blue|yellow)"
    kind = "(circle|square|triangle)"
    shapes = [(s.colour, s.kind, s.x) for s in scene.shapes]
    if m := re.fullmatch(rf"(?:what color is the|which color does the) {kind}(?: have)?\?", text):
        matches = [c for c, k, _ in shapes if k == m[1]]
        assert len(matches) == 1, f"ambiguous question {text!r}"
        return matches[0]
    if m := re.fullmatch(rf"(?:how many|count the) {kind}s(?: are there\?|\.)", text):
        return str(sum(k == m[1] for _, k, _ in shapes))
    if m := re.fullmatch(rf"(?:how many|count the) {colour} shapes(?: are there\?|\.)", text):
        return str(sum(c == m[1] for c, _, _ in shapes))
    if m := re.fullmatch(rf"(?:is there|does the image contain) a {colour} {kind}\?", text):
        return "yes" if (m[1], m[2]) in {(c, k) for c, k, _ in shapes} else "no"
    relation = None
    if m := re.fullmatch(rf"is the {colour} {kind} left or right of the {colour} {kind}\?", text):
        relation = (m[1], m[2]), (m[3], m[4])
    elif m := re.fullmatch(rf"which side of the {colour} {kind} is the {colour} {kind} on\?", text):
        relation = (m[3], m[4]), (m[1], m[2])
    if relation:
        (first,) = [x for c, k, x in shapes if (c, k) == relation[0]]
        (second,) = [x for c, k, x in shapes if (c, k) == relation[1]]
        # the two shapes lie in different cell columns: their pixels do not overlap horizontally
        cell = scene.image_size / scene.grid_cells
        assert int(first // cell) != int(second // cell)
        return "left" if first < second else "right"
    raise AssertionError(f"question matches no template: {text!r}")


def test_shapes_vqa_is_deterministic_and_splits_are_independent():
    first = make_shapes_vqa(seed=3, train_size=50, val_size=40, test_size=30)
    again = make_shapes_vqa(seed=3, train_size=50, val_size=40, test_size=30)
    other = make_shapes_vqa(seed=4, train_size=50, val_size=40, test_size=30)
    bigger = make_shapes_vqa(seed=3, train_size=80, val_size=40, test_size=30)
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint != other.fingerprint
    for split in ("train", "val", "test"):
        for a, b in zip(first.split(split), again.split(split)):
            assert torch.equal(a.image, b.image) and a.text == b.text and a.label == b.label
            assert a.scene == b.scene
    # resizing train leaves the clean val/test splits untouched
    for split in ("val", "test"):
        assert [e.text for e in first.split(split)] == [e.text for e in bigger.split(split)]
        assert all(torch.equal(a.image, b.image) for a, b in zip(first.split(split), bigger.split(split)))
    assert [e.text for e in first.train] == [e.text for e in bigger.train[:50]]
    assert [e.text for e in first.train] != [e.text for e in first.val[:40]]
    assert first.summary()["sizes"] == {"train": 50, "val": 40, "test": 30}


def test_every_answer_follows_from_the_scene():
    task = make_shapes_vqa(seed=0, train_size=400, val_size=100, test_size=100)
    assert task.classes == ANSWERS
    seen_types, seen_answers = set(), set()
    for split in ("train", "val", "test"):
        for example in task.split(split):
            expected = _independent_answer(example.text, example.scene)
            assert task.classes[example.label] == expected, example.text
            seen_types.add(example.meta["question"]["type"])
            seen_answers.add(expected)
            assert 1 <= len(example.scene.shapes) <= 4
            assert len({(s.colour, s.kind) for s in example.scene.shapes}) == len(example.scene.shapes)
    assert seen_types == {"colour", "count", "presence", "relation"}
    assert {"yes", "no", "left", "right", "red", "green", "blue", "yellow", "0", "1", "2"} <= seen_answers


def test_images_show_the_scene():
    examples = generate_examples(200, seed=1)
    palette = {name: tuple(round(v * 255) for v in rgb) for name, rgb in COLOURS.items()}
    for example in examples:
        image = example.image
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
        pixels = image.permute(1, 2, 0).reshape(-1, 3)
        background = round(example.scene.background * 255)
        for name, rgb in palette.items():
            count = int((pixels == torch.tensor(rgb, dtype=torch.uint8)).all(1).sum())
            shapes = example.scene.find(colour=name)
            assert (count > 0) == bool(shapes), (name, example.scene)
            if shapes:  # each shape's centre pixel carries its colour
                for shape in shapes:
                    centre = image[:, int(shape.y), int(shape.x)]
                    assert tuple(centre.tolist()) == rgb
                # a shape covers roughly its area (square 4r^2, circle pi r^2, triangle 2r^2)
                area = sum({"square": 4.0, "circle": np.pi, "triangle": 2.0}[s.kind] * s.size ** 2
                           for s in shapes)
                assert 0.5 * area < count < 1.6 * area + 4
        others = ~torch.stack([(pixels == torch.tensor(rgb, dtype=torch.uint8)).all(1)
                               for rgb in palette.values()]).any(0)
        assert (pixels[others] == background).all()


def test_render_distinguishes_kinds():
    from autoaug.trainers.shapes_vqa import Scene, Shape

    scenes = [Scene((Shape(kind, "red", 16.0, 16.0, 8.0),), 0.0, 32) for kind in KINDS]
    masks = render(scenes)[:, 0] > 0
    circle, square, triangle = (int(m.sum()) for m in masks)
    assert square == 16 * 16
    assert abs(circle - np.pi * 64) < 12
    assert abs(triangle - 16 * 16 / 2) < 20
    assert masks[2, 9, 16] and not masks[2, 9, 9]  # apex at the top: narrow there


def test_generation_is_fast():
    # A guard against an algorithmic slip (say, quadratic shape placement), not a speed figure: this
    # process's CPU time, which another process's load does not inflate (0.6-0.75 s measured at load 2.6).
    generate_examples(20)  # warm-up
    start = time.process_time()
    examples = generate_examples(2000, seed=7)
    used = time.process_time() - start
    assert len(examples) == 2000
    assert used < 4.0, f"generating 2000 examples took {used:.2f} s of CPU"


@pytest.mark.parametrize("options", [{"train_size": 0}, {"image_size": 8}, {"max_shapes": 12}])
def test_shapes_vqa_rejects_bad_options(options):
    with pytest.raises(AutoaugInputError):
        make_shapes_vqa(**options)


def test_load_task_by_name():
    task = load_task("shapes-vqa", seed=1, train_size=10, val_size=5, test_size=5)
    assert len(task.train) == 10 and task.name == "shapes-vqa"
    with bad_input("unknown task 'nope'.*shapes-vqa"):
        load_task("nope")
    with bad_input("exactly one"):
        load_task_or_data()
    with bad_input("exactly one"):
        load_task_or_data(task="shapes-vqa", data="x")


# ====================================================================== tokenizer
TEXTS = ["Is there a red circle?", "how many squares are there?", "What color is the triangle?"]


@pytest.mark.parametrize("kind, vocab_size", [("wordlevel", 200), ("bpe", 40)])
def test_tokenizer_round_trip_and_layout(kind, vocab_size):
    tokenizer = TextTokenizer.fit(TEXTS, kind=kind, vocab_size=vocab_size)
    if kind == "bpe":  # a small BPE vocabulary splits words into pieces
        assert any(token.startswith("##") for token in tokenizer.tokens(TEXTS[0]))
    ids, mask = tokenizer.encode(TEXTS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (3, tokenizer.max_length)
    lengths = mask.sum(1)
    assert int(lengths.max()) == tokenizer.max_length  # fitted to the longest training text
    assert (ids[:, 0] == tokenizer.cls_id).all()
    assert (ids[torch.arange(3), lengths - 1] == tokenizer.sep_id).all()
    assert (ids[~mask] == tokenizer.pad_id).all()
    assert (mask[:, :-1] | ~mask[:, 1:]).all()  # right padding: no kept token after a pad
    assert tokenizer.decode(ids) == [t.lower() for t in TEXTS]
    assert tokenizer.tokens(TEXTS[0])[0] == "[CLS]" and tokenizer.tokens(TEXTS[0])[-1] == "[SEP]"
    assert (tokenizer.special_mask(ids) == (~mask | (ids == tokenizer.cls_id) | (ids == tokenizer.sep_id))).all()


def test_tokenizer_specials_unknowns_and_truncation():
    tokenizer = TextTokenizer.fit(TEXTS, max_length=6)
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id, tokenizer.unk_id) == (0, 1, 2, 3, 4)
    vocabulary = tokenizer.vocabulary
    assert vocabulary.vocab_size == tokenizer.vocab_size and vocabulary.mask_id == 3
    assert set(vocabulary.special_ids) == {0, 1, 2, 3}
    ids, mask = tokenizer.encode(["IS THERE a purple hexagon and more words?"])
    assert ids.shape == (1, 6) and bool(mask.all())
    assert ids[0].tolist() == [1, tokenizer.token_id("is"), tokenizer.token_id("there"),
                               tokenizer.token_id("a"), tokenizer.unk_id, tokenizer.sep_id]
    with pytest.raises(AutoaugInputError):
        tokenizer.encode("one string")
    with pytest.raises(AutoaugInputError):
        TextTokenizer.fit([])
    with bad_input("kind"):
        TextTokenizer.fit(TEXTS, kind="sentencepiece")


def test_tokenizer_save_load_and_pickle(tmp_path):
    tokenizer = TextTokenizer.fit(TEXTS)
    path = tokenizer.save(tmp_path / "sub" / "tokenizer.json")
    loaded = TextTokenizer.load(path)
    probe = TEXTS + ["is there a blue circle?"]
    for other in (loaded, pickle.loads(pickle.dumps(tokenizer))):
        assert other.max_length == tokenizer.max_length and other.vocab_size == tokenizer.vocab_size
        for a, b in zip(tokenizer.encode(probe), other.encode(probe)):
            assert torch.equal(a, b)
    with bad_input("not found"):
        TextTokenizer.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with bad_input("bad.json"):
        TextTokenizer.load(tmp_path / "bad.json")


# ====================================================================== collate
def test_to_batch_is_a_pixel_stage_batch():
    task = make_shapes_vqa(seed=0, train_size=20, val_size=5, test_size=5)
    tokenizer = TextTokenizer.fit(task.texts("train"))
    batch = to_batch(task.train[:6], tokenizer, task.num_classes)
    assert isinstance(batch, MultimodalBatch) and batch.vision is None
    assert batch.images.shape == (6, 3, 32, 32) and batch.images.dtype == torch.float32
    assert 0.0 <= float(batch.images.min()) and float(batch.images.max()) <= 1.0
    assert torch.equal((batch.images[0] * 255).round().to(torch.uint8), task.train[0].image)
    assert batch.labels.shape == (6, task.num_classes)
    assert batch.labels.argmax(1).tolist() == [e.label for e in task.train[:6]]
    assert torch.equal(batch.labels.sum(1), torch.ones(6))
    assert batch.vocab == tokenizer.vocabulary
    assert batch.text_special[:, 0].all()  # [CLS]
    assert torch.equal(batch.text_special, ~batch.text_mask | (batch.text_ids == tokenizer.sep_id)
                       | (batch.text_ids == tokenizer.cls_id))
    loader = torch.utils.data.DataLoader(task.train, batch_size=8, collate_fn=Collator(tokenizer, task.num_classes))
    sizes = [b.batch_size for b in loader]
    assert sizes == [8, 8, 4]
    with pytest.raises(AutoaugInputError):
        to_batch([], tokenizer, task.num_classes)


# ====================================================================== user data: fixtures
def _png(image: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def source_task():
    """A small shapes-vqa task whose val/test answers all occur in train (as user data must)."""
    task = make_shapes_vqa(seed=5, train_size=40, val_size=12, test_size=12)
    known = {e.label for e in task.train}
    task.val = [e for e in task.val if e.label in known][:8]
    task.test = [e for e in task.test if e.label in known][:8]
    assert len(task.val) == len(task.test) == 8
    return task


def _records(task):
    """(image png, text, label name, split) rows of a task, in split order."""
    return [(_png(e.image), e.text, task.classes[e.label], split)
            for split in ("train", "val", "test") for e in task.split(split)]


def _write_parquet(path, rows, *, with_split=True, drop=None, label_ints=None, metadata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {
        "image": pa.array([{"bytes": png, "path": None} for png, *_ in rows],
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "text": pa.array([text for _, text, _, _ in rows]),
        "label": pa.array(label_ints if label_ints is not None else [label for _, _, label, _ in rows]),
    }
    if with_split:
        columns["split"] = pa.array([split for *_, split in rows])
    if drop:
        del columns[drop]
    table = pa.table(columns)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path


def _write_shards(folder, rows, *, per_shard=15, label_as="cls", with_split=True, skip=None):
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, len(rows), per_shard):
        with wds.TarWriter(str(folder / f"shard-{shard // per_shard:04d}.tar")) as sink:
            for index, (png, text, label, split) in enumerate(rows[shard:shard + per_shard], start=shard):
                sample = {"__key__": f"sample{index:05d}", "png": png, "txt": text}
                meta = {}
                if label_as == "cls":
                    sample["cls"] = label
                else:
                    meta["label"] = label
                if with_split:
                    meta["split"] = split
                if meta:
                    sample["json"] = json.dumps(meta).encode()
                if skip:
                    sample.pop(skip, None)
                sink.write(sample)
    return folder


def _as_tuples(task):
    return {split: [(e.image, e.text, task.classes[e.label]) for e in task.split(split)]
            for split in ("train", "val", "test")}


def _assert_same_records(loaded, source):
    got, want = _as_tuples(loaded), _as_tuples(source)
    for split in ("train", "val", "test"):
        assert len(got[split]) == len(want[split])
        for (image_a, text_a, label_a), (image_b, text_b, label_b) in zip(got[split], want[split]):
            assert torch.equal(image_a, image_b) and text_a == text_b and label_a == label_b


# ====================================================================== user data: readers
def test_parquet_and_webdataset_load_to_the_same_records(tmp_path, source_task):
    rows = _records(source_task)
    from_parquet = load_data(_write_parquet(tmp_path / "data.parquet", rows))
    from_tar = load_data(_write_shards(tmp_path / "shards", rows))
    from_json = load_data(_write_shards(tmp_path / "shards_json", rows, label_as="json"))
    for loaded in (from_parquet, from_tar, from_json):
        _assert_same_records(loaded, source_task)
        assert loaded.split_record["method"] == "column"
        assert loaded.image_size == 32
        assert all(e.scene is None for e in loaded.train)
    assert from_parquet.classes == from_tar.classes
    assert from_parquet.fingerprint == from_tar.fingerprint == from_json.fingerprint
    assert from_parquet.train[3].source.endswith("data.parquet: row 3")
    assert "sample00003" in from_tar.train[3].source


def test_parquet_folder_int_labels_image_paths_and_resize(tmp_path, source_task):
    rows = _records(source_task)
    folder = tmp_path / "folder"
    folder.mkdir()
    _write_parquet(folder / "part-0.parquet", rows[:20])
    _write_parquet(folder / "part-1.parquet", rows[20:])
    _assert_same_records(load_data(folder), source_task)

    # int labels named by the Hugging Face ClassLabel metadata
    names = sorted({label for _, _, label, _ in rows})
    metadata = {b"huggingface": json.dumps({"info": {"features": {"label": {
        "_type": "ClassLabel", "names": names}}}}).encode()}
    path = _write_parquet(tmp_path / "ints.parquet", rows, label_ints=[names.index(r[2]) for r in rows],
                          metadata=metadata)
    _assert_same_records(load_data(path), source_task)

    # image given by a path relative to the Parquet file, and resized to the model's size
    big = Image.new("RGB", (64, 48), (10, 200, 30))
    big.save(tmp_path / "big.png")
    table = pa.table({
        "image": pa.array([{"bytes": None, "path": "big.png"}] * 3,
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "text": ["a", "b", "c"], "label": [7, 7, 7], "split": ["train", "val", "test"]})
    pq.write_table(table, tmp_path / "paths.parquet")
    loaded = load_data(tmp_path / "paths.parquet", image_size=16)
    assert loaded.train[0].image.shape == (3, 16, 16)
    assert loaded.train[0].image[:, 5, 5].tolist() == [10, 200, 30]
    assert loaded.classes == ("7",)


def test_stratified_split_without_a_split_column(tmp_path, source_task):
    rows = _records(source_task)
    path = _write_parquet(tmp_path / "nosplit.parquet", rows, with_split=False)
    first = load_data(path, seed=1)
    again = load_data(path, seed=1)
    other = load_data(path, seed=2)
    record = first.split_record
    assert record["method"] == "stratified" and record["seed"] == 1
    assert sum(record["counts"].values()) == len(rows)
    assert all(record["counts"][s] == len(first.split(s)) > 0 for s in ("train", "val", "test"))
    assert first.fingerprint == again.fingerprint != other.fingerprint
    assert [e.text for e in first.val] == [e.text for e in again.val]
    # stratified: every class of the data is in train
    assert set(first.classes) == {label for _, _, label, _ in rows}
    tars = load_data(_write_shards(tmp_path / "nosplit", rows, with_split=False), seed=1)
    assert tars.split_record["method"] == "stratified"
    assert [e.text for e in tars.test] == [e.text for e in first.test]


def test_fingerprint_follows_the_rows(tmp_path, source_task):
    rows = _records(source_task)
    base = load_data(_write_parquet(tmp_path / "a.parquet", rows)).fingerprint
    changed = list(rows)
    png, text, label, split = changed[0]
    changed[0] = (png, text + " please", label, split)
    assert load_data(_write_parquet(tmp_path / "b.parquet", changed)).fingerprint != base
    assert load_data(_write_parquet(tmp_path / "c.parquet", rows)).fingerprint == base


# ====================================================================== user data: bad input
def test_missing_path(tmp_path):
    with bad_input("nothing-here.parquet: no such file"):
        load_data(tmp_path / "nothing-here.parquet")
    (tmp_path / "empty").mkdir()
    with bad_input("empty: the folder holds no"):
        load_data(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with bad_input(r"notes.txt: expected a Parquet file \(\*\.parquet\) or WebDataset shard \(\*\.tar\)"):
        load_data(tmp_path / "notes.txt")
    mixed = tmp_path / "mixed"
    _write_parquet(mixed / "a.parquet", _records(make_shapes_vqa(seed=0, train_size=4, val_size=2, test_size=2)))
    (mixed / "b.tar").write_bytes(b"")
    with bad_input(r"mixed: the folder mixes formats \(a.parquet \(parquet\), b.tar \(webdataset\)\); keep one"):
        load_data(mixed)


@pytest.mark.parametrize("column", ["image", "text", "label"])
def test_missing_parquet_column(tmp_path, source_task, column):
    path = _write_parquet(tmp_path / "data.parquet", _records(source_task)[:6], drop=column)
    with bad_input(rf"data.parquet: missing column '{column}'") as info:
        load_data(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("member", ["png", "txt", "cls"])
def test_missing_webdataset_member(tmp_path, source_task, member):
    folder = _write_shards(tmp_path / "shards", _records(source_task)[:6], skip=member)
    expected = {"png": "no image", "txt": "no .txt member", "cls": "no label"}[member]
    with bad_input(rf"shard-0000.tar: sample 'sample00000': {expected}"):
        load_data(folder)


def test_undecodable_image_names_the_row(tmp_path, source_task):
    rows = _records(source_task)
    rows[3] = (b"definitely not a png", *rows[3][1:])
    path = _write_parquet(tmp_path / "broken.parquet", rows)
    with bad_input(r"broken.parquet: row 3: the image could not be decoded"):
        load_data(path)
    rows_tar = _records(source_task)
    rows_tar[2] = (_png(source_task.train[2].image)[:40], *rows_tar[2][1:])  # truncated PNG
    with bad_input(r"shard-0000.tar: sample 'sample00002': the image could not"):
        load_data(_write_shards(tmp_path / "shards", rows_tar))


def test_label_seen_only_in_test(tmp_path, source_task):
    rows = _records(source_task)
    index = len(rows) - 1  # the last test row
    rows[index] = (*rows[index][:2], "octagon", "test")
    with pytest.raises(AutoaugInputError,
                       match=rf"data.parquet: row {index}: label 'octagon' appears in the test split but never in train"):
        load_data(_write_parquet(tmp_path / "data.parquet", rows))


def test_empty_split(tmp_path, source_task):
    rows = [(png, text, label, "train" if split == "val" else split)
            for png, text, label, split in _records(source_task)]
    with bad_input(r"data.parquet: the val split is empty"):
        load_data(_write_parquet(tmp_path / "data.parquet", rows))
    with bad_input(r"the val split is empty"):
        load_data(_write_shards(tmp_path / "shards", rows))


def test_bad_split_value_and_null_cells(tmp_path, source_task):
    rows = _records(source_task)
    rows[4] = (*rows[4][:3], "holdout")
    with bad_input(r"row 4: column 'split' is 'holdout'; expected one of train, val, test"):
        load_data(_write_parquet(tmp_path / "split.parquet", rows))
    table = pa.table({
        "image": pa.array([{"bytes": _png(source_task.train[0].image), "path": None}] * 2,
                          type=pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        "text": ["fine", None], "label": ["a", "a"]})
    pq.write_table(table, tmp_path / "nulls.parquet")
    with bad_input(r"nulls.parquet: row 1: column 'text' is null"):
        load_data(tmp_path / "nulls.parquet")
    table = pa.table({"image": pa.array([1, 2]), "text": ["a", "b"], "label": ["a", "b"]})
    pq.write_table(table, tmp_path / "ints.parquet")
    with bad_input(r"ints.parquet: column 'image' must be struct\{bytes, path\}"):
        load_data(tmp_path / "ints.parquet")



def _row(source: str, split):
    from autoaug.trainers.reader_base import Row

    return Row(image=b"", image_path=None, text="t", label="a", split=split, source=source)


def test_one_split_rule_refuses_a_mix_naming_both_places():
    # Catches: a rule that reads the first row only (rows[0] decides; the unsplit row further on
    # passes), one that requires a split everywhere (no rows split must pass), and a message that
    # names only one side.
    from autoaug.trainers.reader_base import require_all_or_no_splits

    require_all_or_no_splits([_row("f: row 0", "train"), _row("f: row 1", "test")], "every file a split")
    require_all_or_no_splits([_row("f: row 0", None), _row("f: row 1", None)], "every file a split")
    require_all_or_no_splits([], "every file a split")
    mixed = [_row("a: row 0", "train"), _row("a: row 1", "val"), _row("b: row 0", None), _row("b: row 1", None)]
    with bad_input(r"^b: row 0: no split, but a: row 0 has one; give every file a split or none$"):
        require_all_or_no_splits(mixed, "every file a split")
    with bad_input(r"^b: row 0: no split, but a: row 1 has one"):  # the unsplit row first: same message
        require_all_or_no_splits([mixed[2], mixed[1]], "every file a split")


def _write_parquet_files(folder, rows, *, with_split=True):
    return _write_parquet(folder / "data.parquet", rows, with_split=with_split)


MIXED_SPLITS = {  # format: (writer of one file or shard folder, the expected message)
    "parquet": (_write_parquet_files, r"b/data.parquet: row 0: no split, but .*a/data.parquet: row 0 has one; "
                                      r"give every file a 'split' column or none"),
    "webdataset": (_write_shards, r"b/shard-0000.tar: sample 'sample00000': no split, but .*a/shard-0000.tar: "
                                  r"sample 'sample00000' has one; give every sample a split \(a .split member or "
                                  r"'split' in its .json\)"),
}


@pytest.mark.parametrize("data_format", sorted(MIXED_SPLITS))
def test_both_readers_enforce_the_one_split_rule(tmp_path, source_task, data_format):
    # Catches: a reader that drops the rule (a folder where one file or shard lacks the split loads,
    # the unsplit rows then fall through to the stratified draw or fail far from the cause).
    write, message = MIXED_SPLITS[data_format]
    rows = _records(source_task)
    write(tmp_path / "a", rows[:20])
    write(tmp_path / "b", rows[20:], with_split=False)
    with bad_input(message):
        load_data(tmp_path)


def test_bad_fractions(tmp_path, source_task):
    path = _write_parquet(tmp_path / "data.parquet", _records(source_task)[:6], with_split=False)
    with bad_input(r"^val_fraction: expected a number in \(0, 1\), got 0.0$") as raised:
        load_data(path, val_fraction=0.0)
    assert raised.value.parameter == "val_fraction"
    with bad_input("below 1"):
        load_data(path, val_fraction=0.6, test_fraction=0.5)


def test_examples_pickle_small(source_task):
    example = source_task.train[0]
    assert isinstance(example, Example)
    assert len(pickle.dumps(example)) < 8000  # the image owns its storage (no view of a big tensor)
    assert data_module.SPLITS == ("train", "val", "test")


# ====================================================================== user data: splits named by files
def _write_split_files(root, rows, names: dict, *, with_split=False):
    """One Parquet file per split at ``root / names[split]`` (the Hub's layout), no split column."""
    for split, name in names.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_parquet(path, [row for row in rows if row[3] == split], with_split=with_split)
    return root


HUB_LAYOUTS = {
    "hub_data_folder": {"train": "data/train-00000-of-00001.parquet", "val": "data/validation-00000-of-00001.parquet",
                        "test": "data/test-00000-of-00001.parquet"},
    "val_and_underscores": {"train": "train_part.parquet", "val": "val.parquet", "test": "test-0.parquet"},
    "dev_folders": {"train": "train/0.parquet", "val": "dev/0.parquet", "test": "test/0.parquet"},
}


@pytest.mark.parametrize("layout", list(HUB_LAYOUTS))
def test_split_named_files_keep_the_users_splits(tmp_path, source_task, layout):
    """A Hub-style folder is read with its own splits, not pooled and re-split 70/15/15."""
    folder = _write_split_files(tmp_path / "dataset", _records(source_task), HUB_LAYOUTS[layout])
    loaded = load_data(folder, seed=3)
    _assert_same_records(loaded, source_task)
    record = loaded.split_record
    assert record["method"] == "files" and "drawn_from_train" not in record
    assert record["counts"] == {"train": 40, "val": 8, "test": 8}
    assert record["files"] == {split: [name] for split, name in HUB_LAYOUTS[layout].items()}


def test_split_named_shards_keep_the_users_splits(tmp_path, source_task):
    rows = _records(source_task)
    for split in ("train", "val", "test"):
        _write_shards(tmp_path / "shards" / split, [row for row in rows if row[3] == split], with_split=False)
    loaded = load_data(tmp_path / "shards")
    _assert_same_records(loaded, source_task)
    assert loaded.split_record["method"] == "files"


def test_a_split_no_file_names_is_drawn_from_train(tmp_path, source_task):
    rows = _records(source_task)
    folder = _write_split_files(tmp_path / "two", rows, {"train": "train.parquet", "test": "test.parquet"})
    loaded = load_data(folder, seed=4)
    record = loaded.split_record
    assert record["method"] == "files"
    assert record["drawn_from_train"] == {"splits": ["val"], "seed": 4, "val_fraction": 0.15}
    assert [e.text for e in loaded.test] == [e.text for e in source_task.test]  # the user's test set, as given
    assert record["counts"]["train"] + record["counts"]["val"] == 40 and record["counts"]["val"] > 0
    train_texts = {e.text for e in source_task.train}
    assert all(e.text in train_texts for e in loaded.val)


def test_file_names_without_train_or_partly_named_are_refused(tmp_path, source_task):
    rows = _records(source_task)
    no_train = _write_split_files(tmp_path / "no_train", rows, {"val": "validation-0.parquet", "test": "test-0.parquet"})
    with pytest.raises(AutoaugInputError, match=r"no_train: the file names name the splits val: validation-0\.parquet, "
                                                r"test: test-0\.parquet but not train"):
        load_data(no_train)
    partly = _write_split_files(tmp_path / "partly", rows, {"train": "train.parquet", "val": "extra.parquet"})
    with pytest.raises(AutoaugInputError, match=r"partly: some file names name a split .* and extra\.parquet does not"):
        load_data(partly)
    contradicting = _write_split_files(tmp_path / "contradicting", rows, {"train": "train.parquet", "val": "test.parquet"},
                                       with_split=True)
    with pytest.raises(AutoaugInputError, match=r"test\.parquet: row 0: split is 'val' but the file name says 'test'"):
        load_data(contradicting)


# ====================================================================== user data: the reader registry
# A format the registry does not know: JSON lines of {"png": base64, "text", "label", "split"}.
JSONL_READER = """
import base64, json
from autoaug.trainers.reader_base import Reader, Row, split_value


class JsonLinesReader(Reader):
    \"\"\"JSON lines: one object per line with png (base64), text, label and split.\"\"\"

    name = "jsonl-images"
    suffixes = (".jsonl",)
    kind = "JSON-lines file"

    def read(self, files):
        rows = []
        for file in files:
            for index, line in enumerate(file.read_text().splitlines()):
                record, where = json.loads(line), f"{file}: line {index}"
                rows.append(Row(image=base64.b64decode(record["png"]), image_path=None, text=record["text"],
                                label=record["label"], split=split_value(record["split"], where, "split"),
                                source=where))
        return rows
"""


def _write_jsonl(path, rows):
    import base64

    path.write_text("".join(json.dumps({"png": base64.b64encode(png).decode(), "text": text, "label": label,
                                        "split": split}) + "\n" for png, text, label, split in rows))
    return path


@pytest.fixture
def clean_reader_registry(monkeypatch):
    """The reader registry as the built-ins left it, restored after the test (entry points unread)."""
    from autoaug.trainers import readers

    monkeypatch.setattr(readers, "_REGISTRY", dict(readers._REGISTRY))
    monkeypatch.setattr(readers, "_BY_SUFFIX", dict(readers._BY_SUFFIX))
    monkeypatch.setattr(readers, "_entry_points_loaded", False)
    return readers


def _import_plugin_module(tmp_path, monkeypatch, name, text):
    import importlib

    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_a_new_format_is_one_reader_class(tmp_path, source_task, clean_reader_registry, monkeypatch):
    """One `Reader` subclass, registered: ``load_data`` reads its files with every shared step (splits,
    label checks, decoding, fingerprint) and gives what the same rows in Parquet give."""
    readers = clean_reader_registry
    module = _import_plugin_module(tmp_path, monkeypatch, "autoaug_test_jsonl_reader", JSONL_READER)
    rows = _records(source_task)
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    with bad_input(r"data.jsonl: expected a Parquet file \(\*\.parquet\) or WebDataset shard"):
        load_data(path)  # not registered yet
    readers.register(module.JsonLinesReader)
    assert readers.names() == ["parquet", "webdataset", "jsonl-images"]
    from_jsonl = load_data(path)
    from_parquet = load_data(_write_parquet(tmp_path / "data.parquet", rows))
    _assert_same_records(from_jsonl, source_task)
    assert from_jsonl.fingerprint == from_parquet.fingerprint
    assert from_jsonl.split_record == from_parquet.split_record
    assert from_jsonl.source == f"jsonl-images:{path}"
    assert from_jsonl.train[2].source.endswith("data.jsonl: line 2")
    with bad_input(r"data.jsonl: line 3: the image could not be decoded"):  # the shared decoding names its row
        broken = list(rows)
        broken[3] = (b"not an image", *broken[3][1:])
        load_data(_write_jsonl(path, broken))
    with bad_input(r"nothing.jsonl: no such file or folder \(expected a Parquet file .*, WebDataset shard "
                   r"\(\*\.tar\) or JSON-lines file \(\*\.jsonl\)"):
        load_data(tmp_path / "nothing.jsonl")


def test_the_reader_registry_refuses_what_it_cannot_dispatch(clean_reader_registry):
    from autoaug.trainers.reader_base import Reader

    readers = clean_reader_registry

    def reader(name, suffixes, doc="A test format."):
        return type("TestReader", (Reader,), {"name": name, "suffixes": suffixes, "kind": "test file", "__doc__": doc})

    with pytest.raises(TypeError, match="registered twice"):
        readers.register(reader("parquet", (".pq",)))
    with pytest.raises(TypeError, match="suffix .tar is already read by 'webdataset'"):
        readers.register(reader("tarball", (".tar",)))
    with pytest.raises(TypeError, match="needs a docstring"):
        readers.register(reader("nodoc", (".nodoc",), doc=""))
    with pytest.raises(TypeError, match="file endings"):
        readers.register(reader("nodot", ("csv",)))
    with pytest.raises(TypeError, match="does not declare `kind`"):
        readers.register(type("NoKind", (Reader,), {"name": "nokind", "suffixes": (".nk",), "__doc__": "x"}))
    with pytest.raises(TypeError, match="subclass of"):
        readers.register(dict)
    assert readers.names() == ["parquet", "webdataset"]  # nothing half-registered


def _install_entry_point(tmp_path, monkeypatch, value):
    """A distribution on ``sys.path`` declaring ``value`` in the ``autoaug.readers`` entry point group."""
    info = tmp_path / "autoaug_test_reader_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: autoaug-test-reader-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[autoaug.readers]\njsonl_images = {value}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_installed_package_adds_a_format_through_entry_points(tmp_path, source_task, clean_reader_registry,
                                                               monkeypatch):
    (tmp_path / "autoaug_test_jsonl_entry.py").write_text(JSONL_READER)
    _install_entry_point(tmp_path, monkeypatch, "autoaug_test_jsonl_entry:JsonLinesReader")
    loaded = load_data(_write_jsonl(tmp_path / "data.jsonl", _records(source_task)))
    _assert_same_records(loaded, source_task)
    assert "jsonl-images" in clean_reader_registry.names()


def test_a_broken_reader_entry_point_stops_with_its_name(tmp_path, clean_reader_registry, monkeypatch):
    from autoaug.errors import AutoaugError

    _install_entry_point(tmp_path, monkeypatch, "autoaug_test_no_such_reader_module:Reader")
    with pytest.raises(AutoaugError, match=r"data reader plug-in 'jsonl_images' \(autoaug_test_no_such_reader_module"
                                           r":Reader, entry point group autoaug.readers\) cannot be used: "
                                           r"ModuleNotFoundError"):
        load_data(tmp_path / "anything.parquet")

"""Fuzzing the boundaries (issue 13): property-based tests of every place where user input enters.

The property (docs/ARCHITECTURE.md, "Command line"): every generated input either works, or is refused
with an `AutoaugInputError` — exit 2 from the CLI — whose message is ONE line naming the file (and
the field, or the column and row); never another exception, never a traceback, never a partial
output file left behind.

Boundaries, each a strategy of plain-data cases plus a check that materialises one case in a
temporary folder and applies the property (`BOUNDARIES` maps names to both):

- ``policy``: policy YAML/JSON files read by `Policy.load`; an accepted policy must round-trip
  through YAML and JSON and its schedules must stay in [0, 1];
- ``space``: search-space YAML read by `load_space`; an accepted space must hash, and the policies
  its trials describe (sampled with a real Optuna trial) must validate;
- ``parquet`` / ``webdataset``: data read, tokenised and stacked by `prepare_task(data=...)` (the
  path of ``--data``): wrong columns and types, undecodable or missing images, empty splits,
  labels only in test, missing members, truncated or corrupt files;
- ``cli``: ``autoaug.cli.main(argv)`` in-process (ops, show, export, train and search with at least
  one bad value); exit 2 must print one line and leave no new file.

Cases start from valid documents and are mutated (a value replaced, a key dropped or misspelt, a
number out of range, NaN, a wrong type, bytes truncated), or are wholly random, so both the
accepting and the refusing paths run. The suite runs a bounded, derandomised number of examples
(reproducible in CI, about a minute); ``benchmarks/fuzz.py`` runs the same strategies and checks
with many more examples and counts the cases that break the property.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoaug import ops
from autoaug.errors import AutoaugInputError
from autoaug.ops.base import STAGES
from autoaug.policy import Policy
from autoaug.policy.schedules import SCHEDULES
from autoaug.policy.schema import PolicyError, validate_policy

OP_NAMES = tuple(ops.names())
STAGE_OF = {name: ops.op_class(name).stage for name in OP_NAMES}
# Each op's constructor options (``options:`` of a policy entry), e.g. magnitude_range, fill, block_size.
OPTIONS_OF = {name: tuple(parameter for parameter in inspect.signature(ops.op_class(name).__init__).parameters
                          if parameter not in ("self", "args", "kwargs")) for name in OP_NAMES}
REPO = Path(__file__).resolve().parents[1]


def fuzz_settings(examples: int) -> settings:
    """Bounded, derandomised (CI is reproducible), no deadline (the shared 2-core machine is noisy)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much, HealthCheck.large_base_example])


# ====================================================================== the property
class PropertyBroken(AssertionError):
    """A generated input that neither worked nor was refused with one clear line."""


def refusal_problems(message: str, names: tuple[str, ...]) -> list[str]:
    """What is wrong with a refusal message: more than one line, a traceback, or none of ``names``
    (the file, folder or flag the input came from) in it."""
    problems = []
    if len(message.strip().splitlines()) > 1:  # \n, \r, and the other breaks str.splitlines knows
        problems.append("more than one line")
    if "Traceback" in message:
        problems.append("a traceback")
    if not message.strip():
        problems.append("an empty message")
    if names and not any(name in message for name in names):
        problems.append(f"does not name {' or '.join(map(repr, names))}")
    return problems


def works_or_refused(action: Callable[[], Any], names: tuple[str, ...], prefix: str = "") -> tuple[str, Any]:
    """``("accepted", result)`` or ``("refused", message)``; anything else breaks the property."""
    try:
        return "accepted", action()
    except AutoaugInputError as error:
        message = str(error)
        problems = refusal_problems(message, names)
        if prefix and not message.startswith(prefix):
            problems.append(f"does not start with {prefix!r}")
        if problems:
            raise PropertyBroken(f"refusal message has {', '.join(problems)}: {message!r}") from error
        return "refused", message


def run_counted(strategy: st.SearchStrategy, check: Callable[[Any], str], examples: int) -> Counter:
    """Apply ``check`` (the property) to ``examples`` generated cases (`fuzz_settings`); how many were
    accepted and how many refused. A case that breaks the property fails the run, as before."""
    outcomes: Counter = Counter()

    @given(strategy)
    @fuzz_settings(examples)
    def one_case(case):
        outcomes[check(case)] += 1

    one_case()
    return outcomes


# The fewest accepted and refused cases each boundary's run must have. "Every input works or is refused in
# one line" also holds for a reader that refuses everything, and for strategies that stop building valid
# inputs: the floors make each run show both paths. The runs are derandomised, so the counts are fixed for
# given strategies and code; measured (accepted/refused): policy 38/112 of 150, space 42/78 of 120, parquet
# 5/65 of 70, webdataset 22/58 of 80, cli 2/78 of 80 (most CLI cases carry a bad value by design). Each floor
# is about half the measured count (at least 1), so a small change to a strategy does not trip it and
# refusing everything (0 accepted) or most valid inputs does.
ACCEPTED_FLOOR = {"policy": 19, "space": 21, "parquet": 2, "webdataset": 11, "cli": 1}
REFUSED_FLOOR = {"policy": 56, "space": 39, "parquet": 32, "webdataset": 29, "cli": 39}


def require_both_paths(boundary: str, outcomes: Counter) -> None:
    """The run of ``boundary`` accepted and refused at least its floors' numbers of cases."""
    counts = (outcomes["accepted"], outcomes["refused"])
    assert counts[0] >= ACCEPTED_FLOOR[boundary], f"{boundary}: only {counts[0]} accepted cases of {sum(counts)}"
    assert counts[1] >= REFUSED_FLOOR[boundary], f"{boundary}: only {counts[1]} refused cases of {sum(counts)}"


# ====================================================================== generic documents
INTERESTING = (-1, 0, 1, 2, 13, 0.5, 1.5, -0.0, 1e308, -1e-300, 2**63, -(2**70), math.nan, math.inf, -math.inf,
               "", "nan", "1", "pixel", "constant", "piecewise", "random_n", True, False, None, [], {}, [0, 1],
               [1, 0], [0.2, 0.8, 0.9], {"kind": "linear"}, "vision_token_dropout", "é\u2028x", "a\nb")
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=10)
# Deep-copied: a mutation must never change a shared value (INTERESTING's lists) for later cases.
replacements = st.one_of(st.sampled_from(INTERESTING), json_values).map(copy.deepcopy)
unit = st.floats(0.0, 1.0)
option_values = st.one_of(st.sampled_from((0, 1, 2, 3, 0.25, 0.5, [0.0, 1.0], [0.2, 0.5], [0.5, 0.2], [1, 2], "mask",
                                           "random", "zero", "mean", "noise", "beta", "head", "tail")).map(copy.deepcopy),
                          replacements)


def _locations(document: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key) in a nested document: the places a mutation can touch."""
    found = []
    if isinstance(document, dict):
        items = list(document.items())
    elif isinstance(document, list):
        items = list(enumerate(document))
    else:
        return found
    for key, value in items:
        found.append(path + (key,))
        found.extend(_locations(value, path + (key,)))
    return found


def _container(document: Any, location: tuple) -> Any:
    for key in location[:-1]:
        document = document[key]
    return document


@st.composite
def mutated(draw, base: st.SearchStrategy) -> Any:
    """A valid document with one to three mutations: value replaced, key dropped, misspelt or added,
    list items swapped (order matters for stages), a value wrapped in a list."""
    document = json.loads(json.dumps(draw(base)))  # a deep copy that hypothesis does not share
    for _ in range(draw(st.integers(1, 3))):
        locations = _locations(document)
        if not locations:
            return draw(replacements)
        location = draw(st.sampled_from(locations))
        container, key = _container(document, location), location[-1]
        action = draw(st.sampled_from(("replace", "delete", "add", "misspell", "swap", "wrap")))
        if action == "replace":
            container[key] = draw(replacements)
        elif action == "delete":
            del container[key]
        elif action == "add" and isinstance(container, dict):
            container[draw(st.text(min_size=1, max_size=8) | st.sampled_from(("kind", "p", "options", "seed")))] = \
                draw(replacements)
        elif action == "misspell" and isinstance(container, dict):
            container[str(key)[:-1] or "x"] = container.pop(key)
        elif action == "swap" and isinstance(container, list) and len(container) > 1:
            other = draw(st.integers(0, len(container) - 1))
            container[key], container[other] = container[other], container[key]
        elif action == "wrap":
            container[key] = [container[key]]
    return document


YAML_SNIPPETS = ("2024-13-01", "2024-02-30 25:61:00", "!!python/object/apply:os.system ['true']", "!!binary AAA",
                 "!!set {a, b}", "&a [*a]", "*undefined", "{<<: 1}", "!!float abc", "!!int 0x", "!!timestamp x",
                 "\t- a", "'unterminated", "{a: 1, a: 2}", "[1, 2", "!!omap [a]", "1_000", "0o17", ".inf", "~",
                 "@reserved", "!!str", "? [a]", "|\n  block\n", "!custom tag", "0x_", "1e1000", "-.nan")


@dataclass(frozen=True)
class FileCase:
    """A file to write: its name (the suffix picks the reader) and its bytes."""

    name: str
    content: bytes

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        path.write_bytes(self.content)
        return path


@st.composite
def document_files(draw, documents: st.SearchStrategy, suffixes: tuple[str, ...]) -> FileCase:
    """A document serialised as YAML or JSON (by suffix), sometimes corrupted at the byte level."""
    suffix = draw(st.sampled_from(suffixes))
    document = draw(documents)
    if suffix == ".json":
        try:
            text = json.dumps(document, allow_nan=True)
        except (TypeError, ValueError):  # non-string keys from a YAML-only mutation
            text = json.dumps(str(document))
    else:
        text = yaml.safe_dump(document, allow_unicode=draw(st.booleans()), sort_keys=draw(st.booleans()))
    content = text.encode("utf-8")
    corruption = draw(st.sampled_from(("none",) * 8 + ("truncate", "insert", "random_text", "random_bytes",
                                                       "deep", "latin1", "yaml_snippet")))
    if corruption == "truncate":
        content = content[:draw(st.integers(0, max(len(content) - 1, 0)))]
    elif corruption == "insert":
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.binary(min_size=1, max_size=6)) + content[at:]
    elif corruption == "random_text":
        content = draw(st.text(max_size=60)).encode("utf-8")
    elif corruption == "random_bytes":
        content = draw(st.binary(max_size=60))
    elif corruption == "deep":  # nesting far past Python's recursion limit
        depth = draw(st.integers(10, 1200))  # past the recursion limit already; PyYAML's scanner is quadratic
        opener, closer = draw(st.sampled_from((("[", "]"), ("{a: ", "}"), ('{"a": ', "}"))))
        content = (opener * depth + "1" + closer * depth).encode()
    elif corruption == "yaml_snippet":  # YAML that parses into surprises (or fails while constructing)
        content += f"\n{draw(st.sampled_from(('x', 'name', 'kind', 'entries')))}: {draw(st.sampled_from(YAML_SNIPPETS))}\n".encode()
    elif corruption == "latin1":
        content = text.encode("utf-8", "replace").replace(b"e", b"\xe9")
    return FileCase(name=draw(st.sampled_from(("policy", "my policy", "p.v2"))) + suffix, content=content)


# ====================================================================== boundary: policy files
@st.composite
def schedules(draw) -> Any:
    kind = draw(st.sampled_from(sorted(SCHEDULES)))
    if draw(st.booleans()) and kind != "piecewise":
        return kind  # the shorthand `schedule: cosine`
    if kind == "constant":
        return {"kind": kind, "value": draw(unit)}
    if kind in ("linear", "cosine"):
        return {"kind": kind, "start": draw(unit), "end": draw(unit)}
    if kind == "step":
        milestones = sorted(draw(st.lists(unit, max_size=3)))
        return {"kind": kind, "milestones": milestones,
                "values": draw(st.lists(unit, min_size=len(milestones) + 1, max_size=len(milestones) + 1))}
    if kind == "warmup_peak_cooldown":
        warmup, cooldown = sorted((draw(unit), draw(unit)))
        return {"kind": kind, "warmup": warmup, "cooldown": cooldown, "start": draw(unit), "end": draw(unit)}
    points = sorted(draw(st.lists(st.tuples(unit, unit), min_size=1, max_size=4)))
    return {"kind": kind, "points": [list(point) for point in points],
            "interpolation": draw(st.sampled_from(("step", "linear")))}


@st.composite
def valid_policies(draw) -> dict:
    names = draw(st.lists(st.sampled_from(OP_NAMES), unique=True, max_size=5))
    entries = [{"op": name, "p": draw(unit), "magnitude": draw(unit), "schedule": draw(schedules()),
                "schedule_p": draw(st.booleans())} for name in sorted(names, key=lambda n: STAGES.index(STAGE_OF[n]))]
    for entry in entries:
        if OPTIONS_OF[entry["op"]] and draw(st.integers(0, 3)) == 0:
            chosen = draw(st.lists(st.sampled_from(OPTIONS_OF[entry["op"]]), unique=True, min_size=1, max_size=2))
            entry["options"] = {name: draw(option_values) for name in chosen}
    document = {
        "schema_version": 1,
        "name": draw(st.text(max_size=12)),
        "selection": draw(st.sampled_from(("sequential", "random_n"))),
        "n": draw(st.integers(1, max(len(entries), 1))),
        "magnitude_sampling": draw(st.sampled_from(("fixed", "uniform"))),
        "clean_fraction": draw(unit),
        "augmented_loss_weight": draw(st.floats(0.0, 10.0)),
        "balance": {modality: draw(st.floats(0.0, 4.0)) for modality in ("vision", "text", "cross")},
        "consistency": {"weight": draw(st.floats(0.0, 5.0)), "temperature": draw(st.floats(0.1, 5.0))},
        "seed": draw(st.integers(0, 2**62)),
        "entries": entries,
    }
    optional = [key for key in document if key != "entries"]
    for key in draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional))):
        del document[key]
    return document


policy_documents = st.one_of(valid_policies(), valid_policies(), mutated(valid_policies()), mutated(valid_policies()),
                             json_values)
policy_files = document_files(policy_documents, (".yaml", ".json", ".yml"))


def check_policy_file(case: FileCase) -> str:
    """`Policy.load` accepts the file (and the policy round-trips) or refuses it in one line naming it."""
    with tempfile.TemporaryDirectory() as folder:
        path = case.write(Path(folder))
        outcome, policy = works_or_refused(lambda: Policy.load(path), names=(str(path),), prefix=f"{path}: ")
        if outcome == "accepted":
            for suffix in (".yaml", ".json"):
                again = Policy.load(policy.dump(Path(folder) / f"again{suffix}"))
                assert again == policy, f"{suffix} round trip changed the policy"
            for entry in policy.config.entries:
                values = entry.schedule.curve(7)
                assert all(0.0 <= value <= 1.0 for value in values), f"schedule left [0, 1]: {values}"
            apply_every_stage(policy)
        return outcome


def apply_every_stage(policy: Policy) -> None:
    """Run an accepted policy on a small synthetic batch of each of its stages (what training does)."""
    from autoaug.synthetic import example_batch

    for stage in policy.stages:
        batch = example_batch(batch_size=4, grid=4, patch_dim=12, text_len=12, num_frames=2, with_saliency=True,
                              with_alignment=True, image_size=32 if stage == "pixel" else None,
                              embed_dim=16 if stage == "embedding" else None, seed=0)
        policy(batch, step=1, total_steps=2, stage=stage)


def test_fuzz_policy_files():
    require_both_paths("policy", run_counted(policy_files, check_policy_file, 150))


# ====================================================================== boundary: search spaces
def _shipped_spaces() -> list[dict]:
    return [yaml.safe_load((REPO / "search_spaces" / f"{name}.yaml").read_text())
            for name in ("vlm_default", "randaugment", "pba_schedule")]


def _range(draw, low: float = 0.0, high: float = 1.0) -> list[float]:
    return sorted((draw(st.floats(low, high)), draw(st.floats(low, high))))


@st.composite
def valid_spaces(draw) -> dict:
    kind = draw(st.sampled_from(("policy", "randaugment", "pba_schedule", "shipped")))
    if kind == "shipped":
        return copy.deepcopy(draw(st.sampled_from(_shipped_spaces())))
    names = draw(st.lists(st.sampled_from(OP_NAMES), unique=True, min_size=1, max_size=6))
    document: dict = {"schema_version": 1, "kind": kind, "name": draw(st.text(min_size=1, max_size=10))}
    if kind == "randaugment":
        document.update(ops=names, n=draw(st.lists(st.integers(1, len(names)), min_size=1, max_size=3)),
                        m=draw(st.lists(unit, min_size=1, max_size=4)), clean_fraction=draw(unit))
        return document
    document["ops"] = {name: {"p": _range(draw), "magnitude": _range(draw)} for name in names}
    document["clean_fraction"] = draw(unit | st.builds(lambda a, b: sorted((a, b)), unit, unit))
    if kind == "pba_schedule":
        document.update(perturbation_interval=draw(st.integers(1, 5)), quantile_fraction=draw(st.floats(0.01, 0.5)),
                        initial_magnitude=draw(unit))
        return document
    low = draw(st.integers(0, len(names)))
    document["entries"] = {"min": low, "max": draw(st.integers(max(low, 1), 12))}
    document["schedules"] = draw(st.lists(st.sampled_from([k for k in SCHEDULES if k != "piecewise"]),
                                          unique=True, min_size=1, max_size=3))
    document["augmented_loss_weight"] = draw(unit)
    if draw(st.booleans()):
        document["balance"] = {"vision": draw(st.floats(0.5, 4.0))}
    return document


space_documents = st.one_of(valid_spaces(), valid_spaces(), mutated(valid_spaces()), mutated(valid_spaces()), json_values)
space_files = document_files(space_documents, (".yaml",))


def check_space_file(case: FileCase) -> str:
    """`load_space` accepts the file (and its trials' policies validate) or refuses it in one line naming it."""
    import optuna

    from autoaug.search.space import PbaScheduleSpace, SearchSpaceError, load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        path = case.write(Path(folder))
        outcome, space = works_or_refused(lambda: load_space(path), names=(str(path),), prefix=f"{path}: ")
        if outcome == "refused":
            return outcome
        assert len(space.hash) == 64
        if isinstance(space.model, PbaScheduleSpace):
            validate_policy(space.policy_data({}), path)
            return outcome
        with contextlib.suppress(SearchSpaceError):  # --sampler grid on a space that has no grid
            space.grid()
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
        for _ in range(3):
            trial = study.ask()
            space.suggest(trial)
            try:
                validate_policy(space.policy_data(trial.params), path)
            except PolicyError as error:
                raise PropertyBroken(f"a trial of an accepted space built an invalid policy: {error}") from error
            study.tell(trial, 0.5)
        return outcome


def test_fuzz_search_space_files():
    require_both_paths("space", run_counted(space_files, check_space_file, 120))


# ====================================================================== images for data cases
IMAGE_KINDS = ("png", "png", "jpeg", "png_gray", "png_rgba", "png_palette", "png_16bit", "png_1x1", "jpeg_cmyk",
               "gif", "garbage", "truncated_png", "empty", "null")


@lru_cache(maxsize=None)
def image_bytes(kind: str) -> Optional[bytes]:
    """Encoded test images by kind (``None`` for a null cell)."""
    from PIL import Image

    def encode(image, fmt: str) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt)
        return buffer.getvalue()

    made = {
        "png": lambda: encode(Image.new("RGB", (12, 9), (200, 30, 30)), "PNG"),
        "jpeg": lambda: encode(Image.new("RGB", (16, 16), (30, 200, 30)), "JPEG"),
        "png_gray": lambda: encode(Image.new("L", (8, 8), 100), "PNG"),
        "png_rgba": lambda: encode(Image.new("RGBA", (8, 8), (0, 0, 200, 100)), "PNG"),
        "png_palette": lambda: encode(Image.new("P", (8, 8), 3), "PNG"),
        "png_16bit": lambda: encode(Image.new("I;16", (8, 8), 3000), "PNG"),
        "png_1x1": lambda: encode(Image.new("RGB", (1, 1)), "PNG"),
        "jpeg_cmyk": lambda: encode(Image.new("CMYK", (8, 8), (0, 50, 100, 0)), "JPEG"),
        "gif": lambda: encode(Image.new("P", (8, 8), 1), "GIF"),
        "garbage": lambda: b"not an image at all \x00\x01",
        "truncated_png": lambda: encode(Image.new("RGB", (40, 40), (1, 2, 3)), "PNG")[:60],
        "empty": lambda: b"",
        "null": lambda: None,
    }
    return made[kind]()


WORDS = ("what", "color", "is", "the", "circle", "left", "right", "of", "square", "how", "many", "?")
LABELS = ("red", "blue", "2", "10", "yes")
SPLIT_VALUES = ("train", "val", "test", "validation", "valid", "TEST", " val ", "dev", "bogus", "", None, 3)

clean_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
any_texts = st.one_of(clean_texts, st.text(max_size=15), st.just(""), st.just("   "), st.just("?!"))


# ====================================================================== boundary: Parquet
@dataclass(frozen=True)
class ParquetFile:
    """One Parquet file: column names with an Arrow type kind, and rows of plain values."""

    name: str
    columns: tuple[tuple[str, str], ...]
    rows: tuple[tuple, ...]  # one value per column; images are kinds of `image_bytes`, or ("path", kind)
    class_label_names: Any = None  # Hugging Face ClassLabel names of `label` (a tuple, or something else)
    corruption: tuple = ("none",)

    @property
    def label_metadata(self) -> bool:
        return ("label", "int64_classlabel") in self.columns


@dataclass(frozen=True)
class DataCase:
    """``--data`` input: one file given directly, or a folder of files (side files for image paths)."""

    files: tuple
    as_folder: bool
    extra_files: tuple[tuple[str, bytes], ...] = field(default=())


IMAGE_TYPES = ("struct", "struct", "struct", "struct_bytes", "struct_path", "struct_other", "struct_wrong_types",
               "binary", "string", "int64")
TEXT_TYPES = ("string", "string", "large_string", "int64", "binary")
LABEL_TYPES = ("string", "string", "int64", "int64_classlabel", "float64", "bool")
SPLIT_TYPES = ("absent", "absent", "string", "string", "int64")
FOLDER_LAYOUTS = (("part-0.parquet",), ("part-0.parquet", "part-1.parquet"),
                  ("train-00000-of-00001.parquet", "test-00000-of-00001.parquet"),
                  ("data/train-0.parquet", "data/validation-0.parquet", "data/test-0.parquet"),
                  ("train/part-0.parquet", "train/part-1.parquet"))
FOLDER_NAMES = ("part-0.parquet", "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet",
                "test-00000-of-00001.parquet", "data/train-0.parquet", "train/part-0.parquet", "test/part-1.parquet",
                "dev.parquet", "notes.txt", "shard.tar")


@st.composite
def parquet_files(draw, name: str) -> ParquetFile:
    clean = draw(st.booleans())
    image_type = "struct" if clean else draw(st.sampled_from(IMAGE_TYPES))
    text_type = "string" if clean else draw(st.sampled_from(TEXT_TYPES))
    label_type = draw(st.sampled_from(LABEL_TYPES[:3])) if clean else draw(st.sampled_from(LABEL_TYPES))
    split_type = draw(st.sampled_from(SPLIT_TYPES))
    columns = [("image", image_type), ("text", text_type), ("label", label_type)]
    if split_type != "absent":
        columns.append(("split", split_type))
    if not clean:
        if draw(st.booleans()):
            del columns[draw(st.integers(0, len(columns) - 1))]
        if draw(st.booleans()):
            columns.append((draw(st.sampled_from(("extra", "image", "Label", "text"))), "string"))
    rows = []
    for index in range(draw(st.integers(0, 24))):
        row = []
        for column, kind in columns:
            if column == "image":
                if kind.startswith("struct"):
                    path_kind = draw(st.sampled_from(("bytes", "path") if clean else
                                                     ("bytes", "bytes", "path", "missing_path", "both", "neither")))
                    image = draw(st.sampled_from(IMAGE_KINDS[:2] if clean else IMAGE_KINDS))
                    row.append((path_kind, "png" if clean else image))
                else:
                    row.append(("bytes", draw(st.sampled_from(IMAGE_KINDS))))
            elif column == "text":
                row.append(draw(clean_texts if clean else st.one_of(any_texts, st.none())))
            elif column == "label":
                if clean:
                    row.append(index % 2)
                else:
                    row.append(draw(st.one_of(st.integers(-2, 5), st.none())))
            elif column == "split":
                row.append(("train", "train", "train", "val", "test")[index % 5] if clean
                           else draw(st.sampled_from(SPLIT_VALUES)))
            else:
                row.append(draw(st.text(max_size=4)))
        rows.append(tuple(row))
    names = None
    if label_type == "int64_classlabel":  # the names, or metadata that is not a list of names
        names = draw(st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4).map(tuple)
                     | st.sampled_from((5, "abc", None, {"a": 1}, [], [None, 1], [[1]])))
    corruption = ("none",)
    if not clean and draw(st.integers(0, 4)) == 0:
        corruption = (draw(st.sampled_from(("truncate", "zero_bytes", "garbage", "flip"))), draw(unit))
    return ParquetFile(name, tuple(columns), tuple(rows), names, corruption)


@st.composite
def parquet_cases(draw) -> DataCase:
    if draw(st.booleans()):
        return DataCase(files=(draw(parquet_files("data.parquet")),), as_folder=False)
    names = draw(st.sampled_from(FOLDER_LAYOUTS) | st.lists(st.sampled_from(FOLDER_NAMES), unique=True, max_size=3))
    files = tuple(draw(parquet_files(name)) for name in names)
    return DataCase(files=files, as_folder=True)


def _arrow_value(column: str, kind: str, value: Any, folder: Path, row: int) -> Any:
    """A cell as the Arrow type ``kind`` holds it (image cells may write a side file)."""
    if column == "image":
        where, image_kind = value
        data = image_bytes(image_kind)
        if kind == "struct_other":
            return {"foo": row}
        if kind == "struct_wrong_types":  # bytes as text, path as a number (null bytes: the path is read)
            return {"bytes": None if row % 2 else "text, not bytes", "path": row}
        if not kind.startswith("struct"):
            if kind == "string":
                return None if data is None else data.decode("latin-1")
            return None if data is None else (row if kind == "int64" else data)
        path = None
        if where in ("path", "both") and data is not None:
            path = f"images/{row}.png"
            (folder / "images").mkdir(exist_ok=True)
            (folder / path).write_bytes(data)
        elif where == "missing_path":
            path = f"images/missing-{row}.png"
        cell = {"bytes": data if where in ("bytes", "both") else None, "path": path}
        if kind == "struct_bytes":
            cell.pop("path")
        if kind == "struct_path":
            cell.pop("bytes")
        return cell
    if value is None:
        return None
    if kind in ("string", "large_string"):
        return str(value)
    if kind == "binary":
        return str(value).encode()
    if kind in ("int64", "int64_classlabel"):
        try:
            return int(value)
        except (TypeError, ValueError):
            return len(str(value))
    if kind == "float64":
        return float(len(str(value)))
    if kind == "bool":
        return bool(value)
    return value


def _arrow_type(column: str, kind: str):
    import pyarrow as pa

    if column == "image":
        return {"struct": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
                "struct_bytes": pa.struct([("bytes", pa.binary())]),
                "struct_path": pa.struct([("path", pa.string())]),
                "struct_other": pa.struct([("foo", pa.int64())]),
                "struct_wrong_types": pa.struct([("bytes", pa.string()), ("path", pa.int64())]),
                "binary": pa.binary(), "string": pa.string(), "int64": pa.int64()}[kind]
    return {"string": pa.string(), "large_string": pa.large_string(), "int64": pa.int64(),
            "int64_classlabel": pa.int64(), "binary": pa.binary(), "float64": pa.float64(), "bool": pa.bool_()}[kind]


def _corrupt(content: bytes, corruption: tuple) -> bytes:
    kind = corruption[0]
    if kind == "none":
        return content
    at = int(corruption[1] * len(content))
    if kind == "truncate":
        return content[:at]
    if kind == "zero_bytes":
        return b""
    if kind == "garbage":
        return bytes((index * 37 + 11) % 256 for index in range(max(at, 1)))
    if kind == "flip":  # one byte changed: a checksum or a length field may break
        position = min(at, len(content) - 1)
        return content[:position] + bytes([content[position] ^ 0xFF]) + content[position + 1:]
    raise ValueError(kind)


def write_parquet(spec: ParquetFile, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".parquet":  # a stray file in the folder (notes.txt, a .tar shard)
        path.write_bytes(b"stray file\n")
        return
    arrays = []
    for position, (column, kind) in enumerate(spec.columns):
        values = [_arrow_value(column, kind, row[position], path.parent, index) for index, row in enumerate(spec.rows)]
        arrays.append(pa.array(values, type=_arrow_type(column, kind)))
    schema = pa.schema([pa.field(column, array.type) for (column, _), array in zip(spec.columns, arrays)])
    if spec.label_metadata:
        names = spec.class_label_names
        features = {"label": {"_type": "ClassLabel", "names": list(names) if isinstance(names, tuple) else names}}
        schema = schema.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})
    table = pa.Table.from_arrays(arrays, schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path.write_bytes(_corrupt(buffer.getvalue(), spec.corruption))


def check_data(case: DataCase, write: Callable[[Any, Path], None]) -> str:
    """``--data PATH`` read, tokenised and stacked (what `prepare_task` does with it, without importing
    the training stack) works, or is refused in one line naming the path."""
    from autoaug.trainers.data import SPLITS, load_task_or_data
    from autoaug.trainers.prepared import PreparedTask

    def prepare_task(task, data, seed):
        return PreparedTask.build(load_task_or_data(task=task, data=data, seed=seed))

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        root.mkdir()
        for spec in case.files:
            write(spec, root / spec.name)
        target = root if case.as_folder else root / case.files[0].name
        outcome, prepared = works_or_refused(lambda: prepare_task(task=None, data=target, seed=0),
                                             names=(str(target),))
        if outcome == "accepted":
            for split in SPLITS:
                tensors = prepared.splits[split]
                assert len(tensors) > 0, f"accepted data with an empty {split} split"
                assert tensors.images.shape[1:] == (3, 32, 32)
                assert int(tensors.labels.max()) < prepared.num_classes
        return outcome


def check_parquet_case(case: DataCase) -> str:
    return check_data(case, write_parquet)


def test_fuzz_parquet_data():
    require_both_paths("parquet", run_counted(parquet_cases(), check_parquet_case, 70))


# ====================================================================== boundary: WebDataset
@dataclass(frozen=True)
class Shard:
    """A WebDataset tar shard: members as (name, content kind, value), then a corruption."""

    name: str
    members: tuple[tuple[str, str, Any], ...]
    corruption: tuple = ("none",)


MEMBER_SUFFIXES = ("png", "jpg", "jpeg", "txt", "cls", "json", "split", "foo")


def member_bytes(kind: str, value: Any) -> bytes:
    if kind == "image":
        return image_bytes(value) or b""
    if kind == "text":
        return str(value).encode("utf-8")
    if kind == "latin1":
        return "é à".encode("latin-1")
    if kind == "json":
        return json.dumps(value, allow_nan=True).encode()
    if kind == "raw":
        return value
    raise ValueError(kind)


@st.composite
def shards(draw, name: str) -> Shard:
    clean = draw(st.booleans())
    labels_in_json = draw(st.booleans())  # a clean shard gives every sample a split, or none
    members = []
    for index in range(draw(st.integers(0, 14))):
        key = f"sample{index:03d}" if clean or draw(st.integers(0, 5)) else draw(st.sampled_from(
            ("a.b", "dir/x", "", "sample000", ".hidden", "UPPER")))
        if clean:
            members += [(f"{key}.png", "image", "png"), (f"{key}.txt", "text", draw(clean_texts))]
            if not labels_in_json:
                members.append((f"{key}.cls", "text", LABELS[index % 2]))
            else:
                members.append((f"{key}.json", "json", {"label": LABELS[index % 2],
                                                        "split": ("train", "train", "train", "val", "test")[index % 5]}))
            continue
        for suffix in draw(st.lists(st.sampled_from(MEMBER_SUFFIXES), unique=True, max_size=4)):
            if suffix in ("png", "jpg", "jpeg"):
                member = ("image", draw(st.sampled_from(IMAGE_KINDS[:-1])))
            elif suffix == "json":
                member = draw(st.one_of(
                    st.builds(lambda label, split: ("json", {"label": label, "split": split}),
                              st.one_of(st.sampled_from(LABELS), json_values), st.sampled_from(SPLIT_VALUES)),
                    st.tuples(st.just("json"), json_values),
                    st.tuples(st.just("raw"), st.binary(max_size=12))))
            elif suffix in ("txt", "cls", "split"):
                member = draw(st.one_of(st.tuples(st.just("text"), any_texts | st.sampled_from(LABELS + SPLIT_VALUES[:-2])),
                                        st.tuples(st.just("latin1"), st.none())))
            else:
                member = ("raw", draw(st.binary(max_size=8)))
            members.append((f"{key}.{suffix}" if key else suffix, *member))
    corruption = ("none",)
    if not clean and draw(st.integers(0, 3)) == 0:
        corruption = (draw(st.sampled_from(("truncate", "zero_bytes", "garbage", "flip"))), draw(unit))
    return Shard(name, tuple(members), corruption)


@st.composite
def webdataset_cases(draw) -> DataCase:
    if draw(st.booleans()):
        return DataCase(files=(draw(shards("data.tar")),), as_folder=False)
    names = draw(st.lists(st.sampled_from(("shard-000.tar", "shard-001.tar", "train-0.tar", "test-0.tar",
                                           "val/part.tar", "readme.md")), unique=True, max_size=3))
    return DataCase(files=tuple(draw(shards(name)) for name in names), as_folder=True)


def write_shard(spec: Shard, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix != ".tar":
        path.write_bytes(b"stray file\n")
        return
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for member_name, kind, value in spec.members:
            data = member_bytes(kind, value)
            info = tarfile.TarInfo(member_name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(_corrupt(buffer.getvalue(), spec.corruption))


def check_webdataset_case(case: DataCase) -> str:
    return check_data(case, write_shard)


def test_fuzz_webdataset_data():
    require_both_paths("webdataset", run_counted(webdataset_cases(), check_webdataset_case, 80))


# ====================================================================== boundary: the CLI
def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``autoaug.cli.main(argv)`` in this process: (exit code, stdout, stderr)."""
    from autoaug.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@lru_cache(maxsize=None)
def export_workdir() -> Path:
    """A workdir with a real Optuna SQLite study ``fuzz`` (complete trials with policies, a failed one, a
    complete one without a policy) and an empty study ``fuzz-empty``; made once per process."""
    import atexit
    import shutil

    import optuna

    from autoaug.search.record_schema import POLICY_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="autoaug-fuzz-"))
    atexit.register(shutil.rmtree, workdir, True)
    storage = f"sqlite:///{workdir}/optuna.db"
    study = optuna.create_study(study_name="fuzz", storage=storage, direction="maximize")
    for value, preset in ((0.4, "none"), (0.7, "moderate"), (0.6, "aggressive")):
        study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=value,
                                                  user_attrs={POLICY_ATTR: Policy.load(preset).to_dict()}))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=optuna.trial.TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.1))  # no policy recorded
    optuna.create_study(study_name="fuzz-empty", storage=storage, direction="maximize")
    return workdir


@dataclass(frozen=True)
class CliCase:
    """One command line: ``argv`` with placeholders ``{tmp}`` (a fresh folder) and ``{workdir}`` (the
    export workdir), plus a policy file to write at ``{tmp}/<name>`` first."""

    argv: tuple[str, ...]
    file: Optional[FileCase] = None
    out: Optional[str] = None  # the output file the command was asked to write, if any


text_values = st.text(max_size=12).filter(lambda value: not value.startswith("-"))


@st.composite
def ops_commands(draw) -> CliCase:
    argv = ["ops"]
    if draw(st.booleans()):
        argv += ["--stage", draw(st.sampled_from(STAGES) | text_values)]
    if draw(st.booleans()):
        argv += ["--modality", draw(st.sampled_from(("vision", "text", "cross")) | text_values)]
    if draw(st.booleans()):
        argv.append("--json")
    return CliCase(tuple(argv))


@st.composite
def show_commands(draw) -> CliCase:
    if draw(st.integers(0, 3)) == 0:
        return CliCase(("show", draw(st.sampled_from(("moderate", "Moderate", "none", "{tmp}", "{tmp}/nothere.yaml")) | text_values)))
    file = draw(policy_files)
    return CliCase(("show", f"{{tmp}}/{file.name}", *(["--json"] if draw(st.booleans()) else [])), file=file)


OUT_PATHS = ("{tmp}/out.yaml", "{tmp}/out.json", "{tmp}/out", "{tmp}/out.txt", "{tmp}/new/deeper/out.yaml", "{tmp}",
             "{tmp}/existing.yaml", "{tmp}/afile/out.yaml", "/dev/full", "", "{tmp}/out.yaml/")


STORAGE_PLACES = ("workdir", "workdir", "missing_workdir", "storage_bad_url", "storage_new_sqlite", "storage_in_memory")


def _records_flags(draw, places: tuple[str, ...]) -> list[str]:
    """Where a reading command looks for the search records: the fuzz workdir, a missing one, a bad
    storage URL, or a SQLite URL whose file does not exist yet."""
    where = draw(st.sampled_from(places))
    return {"workdir": ["--workdir", "{workdir}"], "missing_workdir": ["--workdir", "{tmp}/nowhere"],
            "storage_new_sqlite": ["--storage", "sqlite:///{tmp}/fresh.db"], "storage_in_memory": ["--storage", "sqlite://"],
            "storage_bad_url": ["--storage", draw(st.sampled_from(("notaurl", "foo://x")) | text_values)],
            }[where]


@st.composite
def export_commands(draw, places: tuple[str, ...] = STORAGE_PLACES) -> CliCase:
    out = draw(st.sampled_from(OUT_PATHS))
    argv = ["export", "--name", draw(st.sampled_from(("fuzz", "fuzz", "fuzz-empty", "nope")) | text_values), "--out", out]
    argv += _records_flags(draw, places)
    if draw(st.booleans()):
        argv += ["--trial", str(draw(st.integers(-2, 6)))]
    if draw(st.booleans()):
        argv.append("--json")
    return CliCase(tuple(argv), out=out)


@st.composite
def report_commands(draw, places: tuple[str, ...] = STORAGE_PLACES) -> CliCase:
    """`autoaug report` on a study that is not there (a real report takes seconds: the suite's
    dashboard tests cover it); the report file must not appear."""
    out = draw(st.sampled_from(("{tmp}/report.html", "{tmp}/new/report.html", "{tmp}/existing.yaml")))
    name = draw(st.sampled_from(("nope", "fuzz-typo")) | text_values.filter(lambda value: not value.startswith("fuzz")))
    return CliCase(("report", "--name", name, "--out", out, *_records_flags(draw, places)), out=out)


# Command lines Click itself refuses (an unknown flag or command, a missing option or value, a value of
# the wrong type): exit 2 and, like every input error, one line.
USAGE_MISTAKES = (("ops", "--bogus"), ("ops", "--stage"), ("export", "--name", "x"), ("export", "--out", "x.yaml"),
                  ("export", "--name", "x", "--out", "y.yaml", "--trial", "abc"), ("search", "--space", "vlm_default"),
                  ("search", "--space", "vlm_default", "--name", "s", "--trials", "many"),
                  ("search", "--space", "vlm_default", "--name", "s", "--cpus-per-trial", "half"),
                  ("train", "--task", "shapes-vqa", "--seed", "1.5"), ("train", "--max-epochs", ""),
                  ("ui", "--port", "http"), ("report", "--name", "x"), ("nocommand",), ("show",),
                  ("show", "a", "b"), ("--json",), ("ops", "--json=yes"))


@st.composite
def usage_mistakes(draw) -> CliCase:
    argv = list(draw(st.sampled_from(USAGE_MISTAKES)))
    if draw(st.booleans()):  # and an unknown flag on top, somewhere
        argv.insert(draw(st.integers(1, len(argv))), draw(st.sampled_from(("--nope", "-x", "--Trials"))))
    return CliCase(tuple(argv))


# Each flag value here is refused before any data is read or any run starts, so a search or a training
# with one of them must exit 2 at once (they are drawn together with values that may be valid).
SEARCH_POISONS = (("--trials", "0"), ("--trials", "-3"), ("--sampler", "bayes"), ("--scheduler", "hyperband"),
                  ("--cpus-per-trial", "1.5"), ("--cpus-per-trial", "0"), ("--gpus-per-trial", "-1"),
                  ("--max-epochs", "0"), ("--learning-rate", "0"), ("--learning-rate", "nan"),
                  ("--learning-rates", "a,b"), ("--learning-rates", "0,-1"), ("--learning-rates", ","),
                  ("--confirm-seeds", "1"), ("--confirm-top-k", "0"), ("--data-seed", "-1"), ("--name", "a/b"),
                  ("--name", ""), ("--space", "{tmp}/nothere.yaml"), ("--space", "{tmp}"), ("--space", "vlm-default"),
                  ("--model", "{tmp}/no-model"), ("--task", "os:nothere"), ("--task", "nomodule_xyz:fn"),
                  ("--task", "shapes_vqa"), ("--data", "{tmp}/nothere.parquet"), ("--data", "{tmp}"))
TRAIN_POISONS = (("--policy", "{tmp}/nothere.yaml"), ("--policy", "moderat"), ("--policy", "{tmp}"),
                 ("--max-epochs", "0"), ("--batch-size", "0"), ("--learning-rate", "-1"), ("--variant", "decoder"),
                 ("--accelerator", "tpu"), ("--model", "{tmp}/no-model"), ("--task", "os:nothere"),
                 ("--task", "shapes_vqa"), ("--data", "{tmp}/nothere.parquet"), ("--data", "{tmp}"),
                 ("--from-search", "nope"))
SEARCH_FLAGS = {"--space": ("vlm_default", "randaugment", "pba_schedule"), "--sampler": ("tpe", "random", "grid"),
                "--scheduler": ("asha", "pbt", "none"), "--trials": ("1", "2"), "--cpus-per-trial": ("0.5", "1"),
                "--max-epochs": ("1",), "--seed": ("0", "-1", "7")}
TRAIN_FLAGS = {"--policy": ("none", "moderate"), "--seed": ("0", "-4"), "--max-epochs": ("1",), "--batch-size": ("8",),
               "--variant": ("encoder", "causal")}


@st.composite
def poisoned_commands(draw, command: str, poisons: tuple, flags: dict) -> CliCase:
    poison = draw(st.lists(st.sampled_from(poisons), min_size=1, max_size=2, unique_by=lambda item: item[0]))
    chosen = dict(poison)
    if "--task" not in chosen and "--data" not in chosen:
        chosen["--task"] = "shapes-vqa"
    if command == "search":
        chosen.setdefault("--name", draw(st.sampled_from(("s", "study-1")) | text_values.filter(bool)))
        chosen.setdefault("--space", "vlm_default")
    for flag, values in flags.items():
        if flag not in chosen and draw(st.booleans()):
            chosen[flag] = draw(st.sampled_from(values))
    argv = [command]
    for flag, value in chosen.items():
        argv += [flag, value]
    argv += ["--workdir", "{tmp}/runs"]
    if draw(st.booleans()):
        argv.append("--json")
    return CliCase(tuple(argv))


cli_commands = st.one_of(ops_commands(), show_commands(), export_commands(), export_commands(), report_commands(),
                         poisoned_commands("search", SEARCH_POISONS, SEARCH_FLAGS),
                         poisoned_commands("train", TRAIN_POISONS, TRAIN_FLAGS), usage_mistakes())


def _files_under(folder: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _visible(text: str) -> str:
    """``text`` as one terminal line shows it: printable characters, whitespace runs as one space."""
    return " ".join("".join(char for char in text if char.isprintable() or char.isspace()).split())


def check_cli_case(case: CliCase) -> str:
    """Exit 0 (with a readable output file and a JSON last line when asked) or exit 2 with one line on
    stderr and no file written or changed."""
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        (tmp / "existing.yaml").write_text("kept: as it was\n")
        (tmp / "afile").write_text("a file where a folder is expected\n")
        if case.file is not None:
            case.file.write(tmp)
        workdir = export_workdir() if any("{workdir}" in arg for arg in case.argv) else None
        argv = [arg.replace("{tmp}", folder).replace("{workdir}", str(workdir)) for arg in case.argv]
        before = _files_under(tmp)
        database_before = (workdir / "optuna.db").stat().st_size if workdir else None
        code, stdout, stderr = run_cli(argv)
        if code == 0:
            if "--json" in argv:
                json.loads(stdout.strip().splitlines()[-1])
            if case.out is not None:
                out = Path(argv[argv.index("--out") + 1])
                assert out.is_file(), f"exit 0 but no {out}"
                if argv[0] == "export":
                    Policy.load(out)
            return "accepted"
        if code != 2:
            raise PropertyBroken(f"exit {code} (expected 0 or 2): {stderr.strip()!r}")
        # The line must name what was wrong: a flag (given, or missing: "--"), a command, or a value or file
        # it was given (an empty value is named by its quotes).
        # Compared as a terminal shows them: the console drops control characters, one_line folds breaks.
        named = tuple(_visible(token.split("=")[0] if token.startswith("-") else token) for token in argv)
        problems = refusal_problems(stderr, names=())
        # (a value with nothing visible — empty, or control characters only — cannot be named)
        if "" not in named and not any(name in _visible(stderr) for name in named + ("--",)):
            problems.append(f"does not name any of {named}")
        if problems:
            raise PropertyBroken(f"stderr has {', '.join(problems)}: {stderr!r}")
        after = _files_under(tmp)
        changed = sorted(path for path in set(before) | set(after) if before.get(path) != after.get(path))
        if changed:
            raise PropertyBroken(f"exit 2 but files were written or changed: {changed}; stderr: {stderr.strip()!r}")
        if workdir is not None:
            assert (workdir / "optuna.db").stat().st_size == database_before
        return "refused"


def test_fuzz_cli_commands():
    require_both_paths("cli", run_counted(cli_commands, check_cli_case, 80))


def test_cli_as_a_process_refuses_a_bad_file_with_exit_2_and_one_line(tmp_path):
    """The real entry point (``python -m autoaug``): exit status, stderr of one line, no traceback."""
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 3000 + "]" * 3000)
    done = subprocess.run([sys.executable, "-m", "autoaug", "show", str(deep)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.strip() == f"error: {deep}: cannot be read as a policy: nested too deeply", done.stderr
    assert done.stdout == ""


def test_cli_usage_mistakes_are_one_line():
    broken = []
    for argv in USAGE_MISTAKES:
        try:
            check_cli_case(CliCase(argv))
        except PropertyBroken as error:
            broken.append(f"{' '.join(argv)}: {error}")
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("command, storage", [("export", "sqlite:///{tmp}/fresh.db"), ("report", "sqlite://")])
def test_a_reading_command_on_a_missing_sqlite_store_exits_2_and_creates_nothing(tmp_path, command, storage):
    # export created fresh.db and then refused; report on an in-memory store failed with exit 1
    out = tmp_path / ("policy.yaml" if command == "export" else "report.html")
    code, _, stderr = run_cli([command, "--name", "s", "--out", str(out), "--storage", storage.format(tmp=tmp_path)])
    assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == [], "the command left files behind"


# ====================================================================== the registry the benchmark runs
BOUNDARIES: dict[str, tuple[st.SearchStrategy, Callable[[Any], str]]] = {
    "policy": (policy_files, check_policy_file),
    "space": (space_files, check_space_file),
    "parquet": (parquet_cases(), check_parquet_case),
    "webdataset": (webdataset_cases(), check_webdataset_case),
    "cli": (cli_commands, check_cli_case),
}


# ====================================================================== defects the fuzzing found
# Each was a crash (another exception, so exit 1 with the wrong message) or a message on several lines,
# or an input read as something it is not; each test failed before its fix.
def refused(action: Callable[[], Any], *fragments: str) -> str:
    """The one-line `AutoaugInputError` message ``action`` raises; it must hold every fragment."""
    with pytest.raises(AutoaugInputError) as info:
        action()
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_input_errors_are_one_line_whatever_they_quote():
    from autoaug.errors import UnknownOpError

    assert str(AutoaugInputError("bad value\n  in <file>, line 3\r\n")) == "bad value in <file>, line 3"
    assert str(UnknownOpError("unknown op 'a\u2028b'")) == "unknown op 'a b'"


@pytest.mark.parametrize("text", ["[" * 3000 + "]" * 3000, "{a: " * 1200 + "1" + "}" * 1200])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_policy_and_space_files_nested_too_deeply_are_refused(tmp_path, text, suffix):
    from autoaug.search.space import load_space

    path = tmp_path / f"deep{suffix}"
    path.write_text(text if suffix == ".yaml" else text.replace("{a: ", '{"a": '))
    refused(lambda: Policy.load(path), str(path), "nested too deeply" if suffix == ".json" or text[0] == "[" else "")
    refused(lambda: load_space(path), str(path))


@pytest.mark.parametrize("content", [b"name: 2024-13-01\n", b"name: 2024-02-30 25:61:00\n", b"name: caf\xe9\n",
                                     "name: \x80 special\n".encode()])
def test_policy_and_space_files_that_do_not_parse_are_refused_in_one_line(tmp_path, content):
    from autoaug.search.space import load_space

    path = tmp_path / "odd.yaml"
    path.write_bytes(content)
    refused(lambda: Policy.load(path), f"{path}: cannot be read as a policy")
    refused(lambda: load_space(path), f"{path}: cannot be read as a search space")


def test_policy_schedule_kind_of_the_wrong_type_is_refused():
    data = {"entries": [{"op": "vision_token_dropout", "schedule": {"kind": ["cosine"]}}]}
    refused(lambda: Policy.from_dict(data, source="p.yaml"), "p.yaml: entries[0].schedule", "allowed: constant")


@pytest.mark.parametrize("options", [{"magnitude_range": [0.1]}, {"magnitude_range": "wide"}, {"nope": 1}])
def test_policy_entry_options_the_op_cannot_take_are_refused_at_load(options):
    data = {"entries": [{"op": "token_mixup", "options": options}]}
    message = refused(lambda: validate_policy(data, "p.yaml"), "p.yaml: entries[0].options", "allowed: magnitude_range")
    assert "token_mixup" in message


def test_a_policy_key_with_a_line_break_is_quoted_on_one_line():
    message = refused(lambda: Policy.from_dict({"balance": {"vis\nion": 1.0}}, source="p.yaml"),
                      "p.yaml: balance['vis\\nion']: unknown field")
    assert "allowed here: vision, text, cross" in message


@pytest.mark.parametrize("document, field", [({"kind": ["policy"]}, "kind"), ({"kind": {"a": 1}}, "kind"),
                                            ({"balance": [1.0]}, "balance"), ({"balance": "heavy"}, "balance")])
def test_search_space_fields_of_the_wrong_type_are_refused(tmp_path, document, field):
    from autoaug.search.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "ops": {"vision_token_dropout": {}}, **document}))
    refused(lambda: load_space(path), f"{path}: {field}")


def _prepare(path: Path):
    from autoaug.trainers.data import load_task_or_data
    from autoaug.trainers.prepared import PreparedTask

    return PreparedTask.build(load_task_or_data(data=path, seed=0))


def _png_rows(count: int, text: str = "what color ?") -> list[tuple]:
    return [(("bytes", "png"), text, ("red", "blue")[index % 2]) for index in range(count)]


def test_parquet_image_path_held_as_a_number_is_refused_by_column(tmp_path):
    spec = ParquetFile("data.parquet", (("image", "struct_wrong_types"), ("text", "string"), ("label", "string")),
                       tuple(_png_rows(8)))
    write_parquet(spec, tmp_path / spec.name)
    refused(lambda: _prepare(tmp_path / spec.name), f"{tmp_path / spec.name}: column 'image' field 'bytes' must be binary")


@pytest.mark.parametrize("names", [5, "red,blue", [["red"]], [None, "blue"]])
def test_parquet_class_label_names_that_are_not_a_list_of_names_are_refused(tmp_path, names):
    rows = tuple((("bytes", "png"), "what color ?", index % 2) for index in range(8))
    spec = ParquetFile("data.parquet", (("image", "struct"), ("text", "string"), ("label", "int64_classlabel")), rows, names)
    write_parquet(spec, tmp_path / spec.name)
    refused(lambda: _prepare(tmp_path / spec.name), f"{tmp_path / spec.name}: column 'label'", "ClassLabel names")


@pytest.mark.parametrize("label", [None, ["red"], {"name": "red"}, True, 1.5])
def test_webdataset_json_labels_that_are_not_a_string_or_int_are_refused(tmp_path, label):
    members = []
    for index in range(8):
        members += [(f"s{index}.png", "image", "png"), (f"s{index}.txt", "text", "what color ?"),
                    (f"s{index}.json", "json", {"label": label if index == 3 else "red"})]
    write_shard(Shard("data.tar", tuple(members)), tmp_path / "data.tar")
    refused(lambda: _prepare(tmp_path / "data.tar"), f"{tmp_path / 'data.tar'}: sample 's3'", ".json 'label'")


def test_parquet_rows_whose_texts_are_all_empty_still_prepare(tmp_path):
    spec = ParquetFile("data.parquet", (("image", "struct"), ("text", "string"), ("label", "string")),
                       tuple(_png_rows(20, text="")))
    write_parquet(spec, tmp_path / spec.name)
    prepared = _prepare(tmp_path / spec.name)
    assert prepared.tokenizer.max_length == 3  # [CLS] [SEP] and one position
    assert sum(len(split) for split in prepared.splits.values()) == 20


@pytest.mark.parametrize("value", ["!!timestamp x", "!!int 0x", "!!float abc"])
def test_policy_and_space_values_yaml_cannot_construct_are_refused(tmp_path, value):
    from autoaug.search.space import load_space

    path = tmp_path / "odd.yaml"
    path.write_text(f"name: {value}\n")
    refused(lambda: Policy.load(path), f"{path}: cannot be read as a policy")
    refused(lambda: load_space(path), f"{path}: cannot be read as a search space")


def test_a_policy_name_holding_a_next_line_character_round_trips_through_yaml(tmp_path):
    policy = Policy.from_dict({"name": "before\x85after", "entries": [{"op": "pixel_rotate"}]})
    assert Policy.load(policy.dump(tmp_path / "policy.yaml")) == policy
    assert Policy.load("moderate").dumps() == yaml.safe_dump(Policy.load("moderate").to_dict(), sort_keys=False,
                                                             allow_unicode=True)  # other files: the same bytes


def test_a_denormal_blur_magnitude_runs_as_the_identity():
    """A valid policy (magnitude in [0, 1]) that kornia refused mid-training: sigma = strength / 20
    underflows to 0. It must run and, a blur of (next to) no width, leave every image as it was.
    Catches a crash (kornia refusing sigma 0), and a sigma clamped up to a visible blur (tried: 0.5 px),
    which "it ran", the old check, did not."""
    import torch

    from autoaug.synthetic import example_batch

    policy = Policy.from_dict({"entries": [{"op": "pixel_gaussian_blur", "p": 1.0, "magnitude": 1e-320}], "seed": 0})
    batch = example_batch(batch_size=4, grid=4, patch_dim=12, text_len=12, image_size=32, seed=0)
    out = policy(batch, step=1, total_steps=2, stage="pixel")
    assert torch.isfinite(out.images).all()
    assert torch.allclose(out.images, batch.images, atol=1e-6)

"""Declarative search spaces (DESIGN §7): shipped files load, bad files fail with one clear error
naming the file, the field and the allowed values, the hash follows content only, and sampling with
a real Optuna study gives params whose policy validates. No Ray is started here.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path

import optuna
import pytest
import yaml

from autoaug import ops
from autoaug.errors import AutoaugInputError
from autoaug.ops.base import STAGES
from autoaug.policy import Policy
from autoaug.policy.schedules import SCHEDULES
from autoaug.search.space import SHIPPED, SearchSpace, SearchSpaceError, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED_KINDS = {"vlm_default": "policy", "randaugment": "randaugment", "pba_schedule": "pba_schedule"}

MINIMAL_POLICY_SPACE = """\
schema_version: 1
kind: policy
name: small
entries: {min: 1, max: 3}
ops:
  vision_token_dropout: {p: [0.3, 1.0], magnitude: [0.0, 1.0]}
  text_mask: {p: [0.3, 1.0], magnitude: [0.1, 0.9]}
schedules: [constant, linear]
"""


def _shipped_text(name: str) -> str:
    return (resources.files("autoaug.search_spaces") / f"{name}.yaml").read_text()


def _write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _stage(op_name: str) -> str:
    return ops.op_class(op_name).stage


# ====================================================================== shipped spaces
@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_space_loads_by_name_and_by_file(name, tmp_path):
    space = load_space(name)
    assert isinstance(space, SearchSpace)
    assert space.name == name
    assert space.kind == SHIPPED_KINDS[name]
    op_names = list(space.model.ops)
    assert op_names and all(op in ops.names() for op in op_names)
    # The same content from a file path gives the same validated space and hash.
    from_file = load_space(_write(tmp_path, _shipped_text(name), f"{name}.yaml"))
    assert from_file.hash == space.hash
    assert from_file.canonical() == space.canonical()
    assert str(tmp_path) in from_file.source


def test_shipped_spaces_are_all_listed():
    folder = resources.files("autoaug.search_spaces")
    files = sorted(Path(str(item.name)).stem for item in folder.iterdir() if item.name.endswith(".yaml"))
    assert files == sorted(SHIPPED)


# ====================================================================== bad input
def _policy_with(**changes) -> str:
    data = yaml.safe_load(MINIMAL_POLICY_SPACE)
    for key, value in changes.items():
        data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


BAD_SPACES = {
    # case: (yaml text, substrings the one-line message must contain)
    "unknown op with close matches": (
        _policy_with(ops={"vision_token_dropot": {"p": [0.3, 1.0]}}),
        ["ops", "unknown op 'vision_token_dropot'", "did you mean", "vision_token_dropout", "allowed:", "text_mask"],
    ),
    "bad range": (
        _policy_with(ops={"text_mask": {"p": [0.8, 0.2]}}),
        ["ops.text_mask.p", "[0.8, 0.2]", "low <= high", "0.0", "1.0"],
    ),
    "magnitude out of unit range": (
        _policy_with(ops={"text_mask": {"magnitude": [0.0, 1.5]}}),
        ["ops.text_mask.magnitude", "[0.0, 1.5]", "<= 1.0"],
    ),
    "unknown schedule": (
        _policy_with(schedules=["constant", "exponential"]),
        ["schedules", "unknown schedule 'exponential'", "allowed:", "constant", "linear", "cosine",
         "warmup_peak_cooldown"],
    ),
    "unknown field": (
        _policy_with(entires={"min": 1, "max": 2}),
        ["entires", "unknown field", "allowed:", "entries", "ops", "schedules", "clean_fraction"],
    ),
    "unknown nested field": (
        _policy_with(ops={"text_mask": {"p": [0.3, 1.0], "magnitdue": [0.0, 1.0]}}),
        ["ops.text_mask.magnitdue", "unknown field", "allowed:", "p", "magnitude"],
    ),
    "newer schema_version": (
        _policy_with(schema_version=2),
        ["schema_version", "2", "newer", "(1)", "upgrade"],
    ),
    "wrong kind": (
        _policy_with(kind="bayesian"),
        ["kind", "'bayesian'", "policy", "randaugment", "pba_schedule"],
    ),
    "entries min above max": (
        _policy_with(entries={"min": 3, "max": 2}),
        ["entries", "min (3)", "max (2)"],
    ),
    "randaugment n larger than the op list": (
        "kind: randaugment\nname: ra\nops: [text_mask, vision_token_dropout]\nn: [1, 3]\nm: [0.5]\n",
        ["n values must be in [1, 2]", "got 3"],
    ),
    "pba quantile fraction too large": (
        "kind: pba_schedule\nname: pba\nops: {text_mask: {}}\nquantile_fraction: 0.9\n",
        ["quantile_fraction", "0.5"],
    ),
    "not a mapping": (
        "- vision_token_dropout\n- text_mask\n",
        ["must be a mapping", "list"],
    ),
}




@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_names_file_field_and_allowed_values(case, tmp_path):
    text, expected = BAD_SPACES[case]
    path = _write(tmp_path, text, "bad.yaml")
    with pytest.raises(SearchSpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert isinstance(caught.value, AutoaugInputError)  # the CLI turns these into exit 2
    assert message.startswith(str(path)), message
    assert "\n" not in message, message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_bad_yaml_names_the_line(tmp_path):
    text = "schema_version: 1\nname: broken\ndescription: a: b\nops: {}\n"
    path = _write(tmp_path, text, "broken.yaml")
    with pytest.raises(SearchSpaceError) as caught:
        load_space(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert "not valid YAML" in message
    assert "line 3" in message, message  # the stray ': ' is on line 3
    assert "mapping values are not allowed" in message


def test_missing_file_names_it_and_the_shipped_spaces(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(SearchSpaceError) as caught:
        load_space(missing)
    message = str(caught.value)
    assert str(missing) in message and "no such file" in message
    for name in SHIPPED:
        assert name in message


def test_unknown_shipped_name_is_refused():
    with pytest.raises(SearchSpaceError, match="vlm_default"):
        load_space("vlm_defualt")


# ====================================================================== hash
def test_hash_ignores_comments_key_order_and_layout_but_follows_content(tmp_path):
    shipped = load_space("vlm_default")
    data = yaml.safe_load(_shipped_text("vlm_default"))
    reordered = {key: data[key] for key in reversed(list(data))}
    reordered["ops"] = {op: dict(reversed(list(ranges.items()))) for op, ranges in reversed(list(data["ops"].items()))}
    text = "# another comment\n" + yaml.safe_dump(reordered, sort_keys=False, default_flow_style=False)
    assert text != _shipped_text("vlm_default")
    assert load_space(_write(tmp_path, text, "reordered.yaml")).hash == shipped.hash

    changed = dict(data)
    changed["ops"] = dict(data["ops"])
    changed["ops"]["text_mask"] = {"p": [0.3, 1.0], "magnitude": [0.0, 0.9]}
    assert load_space(_write(tmp_path, yaml.safe_dump(changed), "changed.yaml")).hash != shipped.hash
    fewer = dict(data)
    fewer["ops"] = {op: ranges for op, ranges in data["ops"].items() if op != "mergemix"}
    assert load_space(_write(tmp_path, yaml.safe_dump(fewer), "fewer.yaml")).hash != shipped.hash
    # Spelling out a default is the same validated content.
    explicit = dict(data, metric="val_accuracy")
    assert load_space(_write(tmp_path, yaml.safe_dump(explicit), "explicit.yaml")).hash == shipped.hash


# ====================================================================== sampling
def test_sampling_with_a_real_optuna_study_gives_valid_policies():
    space = load_space("vlm_default")
    model = space.model
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3))
    counts = set()
    for _ in range(60):
        trial = study.ask()
        space.suggest(trial)
        params = trial.params
        count = params["n_entries"]
        counts.add(count)
        assert model.entries.min <= count <= model.entries.max
        expected_names = {"n_entries", "clean_fraction", "augmented_loss_weight", "balance.vision", "balance.text"}
        for index in range(count):
            op = params[f"entry{index}.op"]
            assert op in model.ops
            ranges = model.ops[op]
            # Conditional names: p and magnitude are named after the op this entry chose.
            names = {f"entry{index}.op", f"entry{index}.{op}.p", f"entry{index}.{op}.magnitude", f"entry{index}.schedule"}
            assert names <= set(params), (names, params)
            assert ranges.p[0] <= params[f"entry{index}.{op}.p"] <= ranges.p[1]
            assert ranges.magnitude[0] <= params[f"entry{index}.{op}.magnitude"] <= ranges.magnitude[1]
            assert params[f"entry{index}.schedule"] in model.schedules
            expected_names |= names
        assert set(params) == expected_names, set(params) ^ expected_names
        assert "balance.cross" not in params  # a fixed number is not a parameter

        data = space.policy_data(params, name="sampled")
        policy = Policy.from_dict(data)
        entries = policy.config.entries
        chosen = [params[f"entry{i}.op"] for i in range(count)]
        assert [entry.op for entry in entries] == sorted(dict.fromkeys(chosen), key=lambda op: STAGES.index(_stage(op)))
        assert len({entry.op for entry in entries}) == len(entries)  # no duplicate ops
        stages = [STAGES.index(entry.stage) for entry in entries]
        assert stages == sorted(stages)
        assert policy.config.clean_fraction == pytest.approx(params["clean_fraction"])
        assert policy.config.augmented_loss_weight == pytest.approx(params["augmented_loss_weight"])
        assert policy.config.balance.vision == pytest.approx(params["balance.vision"])
        assert policy.config.balance.cross == pytest.approx(1.0)
        for entry in entries:
            index = chosen.index(entry.op)
            assert entry.p == pytest.approx(params[f"entry{index}.{entry.op}.p"])
            assert entry.magnitude == pytest.approx(params[f"entry{index}.{entry.op}.magnitude"])
            assert entry.schedule.kind == params[f"entry{index}.schedule"]
        study.tell(trial, float(len(entries)))
    assert counts == set(range(model.entries.min, model.entries.max + 1))


def test_policy_data_drops_repeated_ops_and_sorts_by_stage():
    space = load_space("vlm_default")
    params = {
        "n_entries": 3,
        "entry0.op": "embedding_noise", "entry0.embedding_noise.p": 0.5, "entry0.embedding_noise.magnitude": 0.2,
        "entry0.schedule": "linear",
        "entry1.op": "pixel_color_jitter", "entry1.pixel_color_jitter.p": 0.6,
        "entry1.pixel_color_jitter.magnitude": 0.3, "entry1.schedule": "constant",
        "entry2.op": "embedding_noise", "entry2.embedding_noise.p": 0.9, "entry2.embedding_noise.magnitude": 0.9,
        "entry2.schedule": "cosine",
        "clean_fraction": 0.3, "augmented_loss_weight": 0.7, "balance.vision": 1.2, "balance.text": 0.8,
    }
    data = space.policy_data(params)
    assert [entry["op"] for entry in data["entries"]] == ["pixel_color_jitter", "embedding_noise"]
    noise = data["entries"][1]
    assert (noise["p"], noise["magnitude"], noise["schedule"]) == (0.5, 0.2, "linear")  # the first one is kept
    assert data["balance"] == {"vision": 1.2, "text": 0.8, "cross": 1.0}
    policy = Policy.from_dict(data)
    assert [entry.op for entry in policy.config.entries] == ["pixel_color_jitter", "embedding_noise"]


def test_single_schedule_space_samples_no_schedule_param(tmp_path):
    text = MINIMAL_POLICY_SPACE.replace("schedules: [constant, linear]", "schedules: [cosine]")
    space = load_space(_write(tmp_path, text))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(10):
        trial = study.ask()
        space.suggest(trial)
        assert not any(name.endswith(".schedule") for name in trial.params)
        assert "clean_fraction" not in trial.params  # a fixed default
        policy = Policy.from_dict(space.policy_data(trial.params))
        assert all(entry.schedule.kind == "cosine" for entry in policy.config.entries)
        assert policy.config.clean_fraction == pytest.approx(space.model.clean_fraction)
        study.tell(trial, 0.0)


# ====================================================================== randaugment
def test_randaugment_grid_and_policy_data():
    space = load_space("randaugment")
    model = space.model
    grid = space.grid()
    assert grid == {"n": list(model.n), "m": list(model.m)}
    size = len(model.n) * len(model.m)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler(grid, seed=0))
    seen = set()

    def objective(trial) -> float:
        space.suggest(trial)
        assert set(trial.params) == {"n", "m"}
        seen.add((trial.params["n"], trial.params["m"]))
        data = space.policy_data(trial.params)
        policy = Policy.from_dict(data)
        assert policy.config.selection == "random_n"
        assert policy.config.n == trial.params["n"]
        assert [entry.op for entry in policy.config.entries] == list(model.ops)
        assert all(entry.magnitude == pytest.approx(trial.params["m"]) and entry.p == 1.0
                   for entry in policy.config.entries)
        assert policy.config.clean_fraction == pytest.approx(model.clean_fraction)
        return 0.0

    study.optimize(objective, n_trials=size + 5)  # the grid sampler stops the study when exhausted
    assert len(study.trials) == size
    assert seen == set(itertools.product(model.n, model.m))


def test_grid_needs_a_randaugment_space_and_pba_is_not_sampled():
    with pytest.raises(SearchSpaceError, match="randaugment"):
        load_space("vlm_default").grid()
    pba = load_space("pba_schedule")
    with pytest.raises(SearchSpaceError, match="pbt"):
        pba.suggest(optuna.create_study().ask())
    data = pba.policy_data({})
    policy = Policy.from_dict(data)
    assert {entry.op for entry in policy.config.entries} == set(pba.model.ops)
    assert all(entry.magnitude == pba.model.initial_magnitude for entry in policy.config.entries)


def test_every_schedule_kind_of_a_space_is_a_policy_schedule():
    for name in SHIPPED:
        model = load_space(name).model
        for kind in getattr(model, "schedules", []):
            assert kind in SCHEDULES and kind != "piecewise"


# ====================================================================== CLI
def test_cli_search_with_a_bad_space_exits_2_with_one_line(tmp_path, capsys):
    from autoaug.cli import main

    path = _write(tmp_path, _policy_with(ops={"text_mask": {"p": [0.8, 0.2]}}), "bad.yaml")
    workdir = tmp_path / "runs"
    with pytest.raises(SystemExit) as caught:
        main(["search", "--space", str(path), "--task", "shapes-vqa", "--name", "bad", "--trials", "1",
              "--workdir", str(workdir), "--json"])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert str(path) in lines[0] and "ops.text_mask.p" in lines[0] and "[0.8, 0.2]" in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert not workdir.exists()  # the space is checked before anything is written

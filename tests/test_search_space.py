"""Declarative search spaces: shipped files load, bad files fail with one clear error
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
from autoaug.ops.base import STAGES
from autoaug.policy import Policy
from autoaug.search.space import SHIPPED, SearchSpace, SearchSpaceError, load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SHIPPED_KINDS = {"vlm_default": "policy", "vlm_balanced": "policy", "randaugment": "randaugment",
                 "pba_schedule": "pba_schedule"}

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
    assert space.name == name
    assert space.kind == SHIPPED_KINDS[name]
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
    "searched balance from zero": (
        _policy_with(balance={"vision": [0.0, 1.0]}),
        ["balance: vision", "a searched balance is a range [low, high]", "0 < low <= high <= 4", "[0.0, 1.0]"],
    ),
    "searched balance reversed": (
        _policy_with(balance={"vision": [1.0, 0.5]}),
        ["balance: vision", "0 < low <= high <= 4", "[1.0, 0.5]"],
    ),
    "searched balance of three numbers": (
        _policy_with(balance={"text": [0.5, 0.7, 1.0]}),
        ["balance: text", "range [low, high]", "[0.5, 0.7, 1.0]"],
    ),
    "zero balance": (
        _policy_with(balance={"text": 0.0}),
        ["balance: text", "(0, 4]", "got 0.0"],
    ),
    "searched balance whose weakest end puts a magnitude floor out of reach": (
        _policy_with(balance={"text": [0.5, 1.0]}, ops={"text_mask": {"p": [0.3, 1.0], "magnitude": [0.6, 0.9]}}),
        ["bad.yaml: ops.text_mask.magnitude: the low end 0.6", "balance.text [0.5, 1.0]"],
    ),
    "searched balance wider than the magnitude range": (
        # [0.3, 0.5] at balances 0.5..1: a magnitude m runs at 0.5 m .. m, inside [0.3, 0.5] only if
        # 0.6 <= m <= 0.5 -- no such m (a space that allowed it would run text_mask outside its range)
        _policy_with(balance={"text": [0.5, 1.0]}, ops={"text_mask": {"p": [0.3, 1.0], "magnitude": [0.3, 0.5]}}),
        ["bad.yaml: ops.text_mask.magnitude: [0.3, 0.5] is too narrow for balance.text [0.5, 1.0]",
         "high / low >= 2"],
    ),
    "balance that puts a magnitude floor out of reach": (
        _policy_with(balance={"text": 0.5}, ops={"text_mask": {"p": [0.3, 1.0], "magnitude": [0.6, 0.9]}}),
        ["bad.yaml: ops.text_mask.magnitude: the low end 0.6", "balance.text 0.5"],
    ),
    "entries min above the number of ops": (
        _policy_with(entries={"min": 3, "max": 3}),
        ["entries.min (3)", "number of ops (2)"],
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
def _sample(space: SearchSpace, count: int, seed: int = 3):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial)
        yield trial
        study.tell(trial, 0.0)


def test_sampling_names_each_ops_parameters_once_and_builds_exactly_the_used_ops():
    """Issue 16 items 1-3: per op ``op.<name>.use`` and, when used, its own p / magnitude / schedule;
    the policy holds exactly the ops Optuna recorded as used, once each, in stage order."""
    space = load_space("vlm_default")
    model = space.model
    counts, caps = set(), set()
    for trial in _sample(space, 80):
        params = trial.params
        cap = params["max_ops"]
        caps.add(cap)
        used = [op for op in model.ops if params.get(f"op.{op}.use") is True]
        assert len(used) <= cap
        if len(used) < cap:  # the cap was not reached, so every op was asked
            assert all(f"op.{op}.use" in params for op in model.ops)
        for op in model.ops:
            fields = {f"op.{op}.p", f"op.{op}.magnitude", f"op.{op}.schedule"}
            assert (fields <= set(params)) == (op in used), op  # conditional on use, and only then
            if op in used:
                ranges = model.ops[op]
                assert ranges.p[0] <= params[f"op.{op}.p"] <= ranges.p[1]
                assert ranges.magnitude[0] <= params[f"op.{op}.magnitude"] <= ranges.magnitude[1]
                assert params[f"op.{op}.schedule"] in model.schedules
        assert not set(params) - {"max_ops", "clean_fraction", "augmented_loss_weight"} - {
            f"op.{op}.{field}" for op in model.ops for field in ("use", "p", "magnitude", "schedule")}

        policy = Policy.from_dict(space.policy_data(params, name="sampled"))
        entries = policy.config.entries
        counts.add(len(entries))
        assert [entry.op for entry in entries] == sorted(used, key=lambda op: STAGES.index(_stage(op)))
        for entry in entries:
            assert entry.p == params[f"op.{entry.op}.p"]
            assert entry.magnitude == params[f"op.{entry.op}.magnitude"]
            assert entry.schedule.kind == params[f"op.{entry.op}.schedule"]
        assert policy.config.clean_fraction == params["clean_fraction"]
        assert policy.config.augmented_loss_weight == params["augmented_loss_weight"]
    assert caps == counts == set(range(model.entries.min, model.entries.max + 1))


def test_the_cap_favours_no_op_by_its_place_in_the_file():
    """Ops are considered in an order drawn per trial: with 19 ops and caps of 1-4, the first op of
    the file would otherwise be in about half of all policies and the last almost never."""
    space = load_space("vlm_default")
    first, last = list(space.model.ops)[0], list(space.model.ops)[-1]
    trials = list(_sample(space, 300, seed=5))
    share = {op: sum(trial.params.get(f"op.{op}.use") is True for trial in trials) / len(trials) for op in (first, last)}
    # each op's share is about (mean ops per policy) / 19 ~ 0.13; 4 binomial SDs at n=300 is about 0.08
    assert abs(share[first] - share[last]) < 0.12, share


def test_policy_data_builds_used_ops_in_stage_order():
    space = load_space("vlm_default")
    params = {
        "max_ops": 3,
        "op.embedding_noise.use": True, "op.embedding_noise.p": 0.5, "op.embedding_noise.magnitude": 0.2,
        "op.embedding_noise.schedule": "linear",
        "op.text_mask.use": False,
        "op.pixel_color_jitter.use": True, "op.pixel_color_jitter.p": 0.6,
        "op.pixel_color_jitter.magnitude": 0.3, "op.pixel_color_jitter.schedule": "constant",
        "clean_fraction": 0.3, "augmented_loss_weight": 0.7,
    }
    data = space.policy_data(params)
    assert [entry["op"] for entry in data["entries"]] == ["pixel_color_jitter", "embedding_noise"]
    noise = data["entries"][1]
    assert (noise["p"], noise["magnitude"], noise["schedule"]) == (0.5, 0.2, "linear")
    assert "balance" not in data  # not searched, and vlm_default fixes none
    Policy.from_dict(data)


def test_the_floor_brings_in_ops_without_a_use_question(tmp_path):
    """entries.min is met by ops that join without a use question (their p and magnitude are still
    asked and recorded): nothing Optuna recorded is dropped, and no recorded "no" is overridden."""
    text = MINIMAL_POLICY_SPACE.replace("entries: {min: 1, max: 3}", "entries: {min: 2, max: 2}")
    space = load_space(_write(tmp_path, text))
    forced = 0
    for trial in _sample(space, 40):
        params = trial.params
        entries = space.policy_data(params)["entries"]
        assert len(entries) == 2
        for entry in entries:
            assert params.get(f"op.{entry['op']}.use", True) is True
            assert entry["p"] == params[f"op.{entry['op']}.p"]
        forced += sum(f"op.{entry['op']}.use" not in params for entry in entries)
    assert forced > 0


def test_fixed_balance_keeps_the_run_magnitude_within_the_declared_range(tmp_path):
    """Issue 16 item 5: the magnitude an op runs at is magnitude × balance (`Policy`); a space's fixed
    balance divides the sampled range, so the declared caps hold."""
    text = _policy_with(balance={"vision": 1.5, "text": 0.5},
                        ops={"pixel_random_resized_crop": {"p": [0.2, 1.0], "magnitude": [0.0, 0.6]},
                             "text_mask": {"p": [0.3, 1.0], "magnitude": [0.1, 0.9]}})
    space = load_space(_write(tmp_path, text))
    declared = space.model.ops
    seen = 0
    for trial in _sample(space, 60):
        policy = Policy.from_dict(space.policy_data(trial.params))
        for entry in policy.config.entries:
            balance = getattr(policy.config.balance, entry.modality)
            run_magnitude = min(entry.magnitude * balance, 1.0)  # as Policy.apply_stage computes it
            low, high = declared[entry.op].magnitude
            assert low - 1e-9 <= run_magnitude <= high + 1e-9, (entry.op, run_magnitude)
            seen += 1
    assert seen > 0


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
        assert [entry.op for entry in policy.config.entries] == sorted(model.ops, key=lambda op: STAGES.index(_stage(op)))
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


def test_a_randaugment_op_list_in_any_order_builds_valid_policies(tmp_path):
    """Issue 16 item 13: the builder stage-sorts, so an op list out of stage order is usable."""
    path = _write(tmp_path, "kind: randaugment\nname: ra\nops: [embedding_noise, vision_token_dropout]\n"
                            "n: [1, 2]\nm: [0.5]\n")
    space = load_space(path)
    for n in (1, 2):
        policy = Policy.from_dict(space.policy_data({"n": n, "m": 0.5}))
        assert [entry.op for entry in policy.config.entries] == ["vision_token_dropout", "embedding_noise"]


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

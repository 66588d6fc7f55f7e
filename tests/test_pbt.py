"""Population Based Augmentation without running Ray (issue 16 items 9-11): one explore step, the
exported schedules are what trained, and the run is seeded."""

from __future__ import annotations

import json
import random

import pytest

from autoaug.policy import Policy
from autoaug.search.pbt import (EXPLORE_STEP, RESAMPLE_PROBABILITY, PbaExplore, hyperparameter_ranges, pbt_setup,
                                piecewise_policy, schedule_history)
from autoaug.search.space import load_space
from conftest import effective_setting

PBA = """\
kind: pba_schedule
name: pba_unit
ops:
  vision_token_dropout: {p: [0.2, 1.0], magnitude: [0.0, 1.0]}
  text_mask: {p: [0.2, 1.0], magnitude: [0.0, 1.0]}
perturbation_interval: 2
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "pba.yaml"
    path.write_text(PBA)
    return load_space(path)


def test_exported_p_and_magnitude_are_what_trained_at_every_epoch(space):
    vtd, tm = "op.vision_token_dropout", "op.text_mask"
    history = [  # (epoch from which the config holds, config)
        (0, {f"{vtd}.p": 0.5, f"{vtd}.magnitude": 0.0, f"{tm}.p": 0.7, f"{tm}.magnitude": 0.0}),
        (2, {f"{vtd}.p": 0.6, f"{vtd}.magnitude": 0.1, f"{tm}.p": 0.7, f"{tm}.magnitude": 0.2}),
        (4, {f"{vtd}.p": 0.4, f"{vtd}.magnitude": 0.2, f"{tm}.p": 0.7, f"{tm}.magnitude": 0.2}),
    ]
    max_epochs = 6
    policy = Policy.from_dict(piecewise_policy(space, history, max_epochs, name="pbt"))
    for epoch in range(max_epochs):
        config = max((h for h in history if h[0] <= epoch), key=lambda h: h[0])[1]
        progress = epoch / max_epochs
        for op in ("vision_token_dropout", "text_mask"):
            assert effective_setting(policy, op, progress) == (config[f"op.{op}.p"], config[f"op.{op}.magnitude"]), (op, epoch)
    # text_mask's p never changed: one entry, whose schedule value is its magnitude
    text_mask = [entry for entry in policy.config.entries if entry.op == "text_mask"]
    assert len(text_mask) == 1 and text_mask[0].magnitude == 1.0 and text_mask[0].p == 0.7


def test_explore_is_the_only_perturbation_and_follows_its_seed(space):
    """Ray's own perturbation is not configured, so our explore is the only one; it is reproducible
    from its seed (and another seed moves differently)."""
    model = space.model
    _, scheduler, _ = pbt_setup(model, seed=3)
    assert scheduler._hyperparam_mutations == {}
    assert isinstance(scheduler._custom_explore_fn, PbaExplore)
    ranges = hyperparameter_ranges(model)
    config = {key: 0.5 for key in ranges}
    assert PbaExplore(ranges, 7)(dict(config)) == PbaExplore(ranges, 7)(dict(config))
    assert PbaExplore(ranges, 7)(dict(config)) != PbaExplore(ranges, 8)(dict(config))


# Ranges that are not [0, 1] (a redraw from [0, 1] must show) and start values 0.05 inside a bound (a
# -0.1 or +0.1 step must clip there): PBA's explore on each, many independent seeds.
EXPLORE_RANGES = {"low_range": (0.2, 0.6), "high_range": (0.5, 1.0)}
EXPLORE_SEEDS = 1000


def _explore_outcomes(start: dict[str, float]) -> dict[str, dict[str, list[float]]]:
    """Per key, the values one explore step gave from ``start``, sorted into "up" (start + 0.1, or
    the upper bound where that clips), "down" (likewise) and "redraw" (anything else: a uniform redraw
    lands exactly on one of those two values with probability 0)."""
    outcomes = {key: {"up": [], "down": [], "redraw": []} for key in EXPLORE_RANGES}
    for seed in range(EXPLORE_SEEDS):
        after = PbaExplore(EXPLORE_RANGES, seed)(dict(start))
        for key, (low, high) in EXPLORE_RANGES.items():
            up, down = min(start[key] + EXPLORE_STEP, high), max(start[key] - EXPLORE_STEP, low)
            kind = "up" if after[key] == pytest.approx(up, abs=1e-12) else \
                "down" if after[key] == pytest.approx(down, abs=1e-12) else "redraw"
            outcomes[key][kind].append(after[key])
    return outcomes


def _within(count: int, n: int, probability: float) -> bool:
    """``count`` of ``n`` Bernoulli(probability) draws is within 4 binomial SD of its mean (a false
    alarm about once in 16 000 runs per check; the draws are seeded, so it is fixed anyway)."""
    return abs(count - n * probability) <= 4 * (n * probability * (1 - probability)) ** 0.5


@pytest.mark.parametrize("edge", ["near the lower bound", "near the upper bound"])
def test_explore_steps_up_or_down_by_0_1_clips_at_the_bounds_and_redraws_in_the_range(edge):
    """Catches: a step that always adds +0.1 (no "down" outcomes), no clipping (a value outside its
    range), a redraw from [0, 1] instead of the key's range, a redraw probability other than 0.2,
    and a redraw confined to part of the range."""
    start = {key: (low + 0.05 if edge == "near the lower bound" else high - 0.05)
             for key, (low, high) in EXPLORE_RANGES.items()}
    step_probability = (1 - RESAMPLE_PROBABILITY) / 2
    for key, outcome in _explore_outcomes(start).items():
        low, high = EXPLORE_RANGES[key]
        counts = {kind: len(values) for kind, values in outcome.items()}
        assert _within(counts["up"], EXPLORE_SEEDS, step_probability), (key, counts)
        assert _within(counts["down"], EXPLORE_SEEDS, step_probability), (key, counts)
        assert _within(counts["redraw"], EXPLORE_SEEDS, RESAMPLE_PROBABILITY), (key, counts)
        # the step toward the near bound clips at it exactly; the step away moves the full 0.1
        if edge == "near the lower bound":
            toward, away, bound, moved_to = outcome["down"], outcome["up"], low, start[key] + EXPLORE_STEP
        else:
            toward, away, bound, moved_to = outcome["up"], outcome["down"], high, start[key] - EXPLORE_STEP
        assert all(value == bound for value in toward), (key, set(toward))
        assert all(value == pytest.approx(moved_to, abs=1e-12) for value in away), (key, set(away))
        redraws = outcome["redraw"]
        assert all(low <= value <= high for value in redraws), (key, min(redraws), max(redraws))
        # uniform on [low, high]: each half of the range holds about half of the redraws
        lower_half = sum(value < (low + high) / 2 for value in redraws)
        assert _within(lower_half, len(redraws), 0.5), (key, lower_half, len(redraws))


def _noop_trainable(config):
    return None


def test_initial_draws_follow_the_seed(space):
    from ray.tune.search.basic_variant import BasicVariantGenerator

    def draws(seed: int) -> list[dict]:
        param_space, _, variants = pbt_setup(space.model, seed)
        assert isinstance(variants, BasicVariantGenerator)
        variants.add_configurations({"pbt": {"run": _noop_trainable, "config": param_space, "num_samples": 4}})
        configs = []
        for index in range(4):
            trial = variants.next_trial()
            configs.append({key: value for key, value in trial.config.items()})
        return configs

    assert draws(5) == draws(5)
    assert draws(5) != draws(6)
    random.seed(0)  # leave the global generator in a known state for other tests


def _exploit_line(target_iter: int, clone_iter: int, old: dict, new: dict) -> str:
    """One line of Ray's ``pbt_policy_<trial>.txt``: [target, clone, target_iter, clone_iter, old, new]."""
    return json.dumps(["target_tag", "clone_tag", target_iter, clone_iter, old, new])


def test_schedule_history_reads_the_config_in_force_from_each_epoch(tmp_path):
    """The member's weights after an exploit are the clone's at ``clone_iter``, so the new config holds
    from that epoch on, and the first line's old config (the lineage's first member's) from epoch 0.
    Catches: ``target_iter`` taken as the epoch, the starting config dropped, lines out of order, and
    the final config used where a log exists."""
    initial, second, third = ({"op.a.p": value} for value in (0.3, 0.5, 0.7))
    log = tmp_path / "pbt_policy_x.txt"
    # Ray copies the clone's log into the target's, then appends: the lineage's lines, oldest first
    log.write_text(_exploit_line(3, 2, initial, second) + "\n\n" + _exploit_line(5, 4, second, third) + "\n")
    final = {"op.a.p": 0.9}
    assert schedule_history(log, final) == [(0, initial), (2, second), (4, third)]


@pytest.mark.parametrize("log_text", [None, "", "\n"], ids=["no log", "empty log", "blank log"])
def test_schedule_history_of_a_member_never_exploited_is_its_final_config(tmp_path, log_text):
    """A member never exploited trained with one config: its own (Ray writes no log for it)."""
    log = tmp_path / "pbt_policy_y.txt"
    if log_text is not None:
        log.write_text(log_text)
    final = {"op.a.p": 0.4}
    assert schedule_history(log, final) == [(0, final)]

"""Population Based Augmentation without running Ray (issue 16 items 9-11): one explore step, the
exported schedules are what trained, and the run is seeded."""

from __future__ import annotations

import random

import pytest

from autoaug.policy import Policy
from autoaug.search.pbt import PbaExplore, hyperparameter_ranges, pbt_setup, piecewise_policy
from autoaug.search.space import load_space

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


def _effective(policy: Policy, op: str, progress: float) -> tuple[float, float]:
    """(p, magnitude) that ``op`` runs at, at ``progress``: the one entry whose p is not zero there."""
    active = []
    for entry in policy.config.entries:
        if entry.op != op:
            continue
        multiplier = entry.schedule(progress)
        p = entry.p * (multiplier if entry.schedule_p else 1.0)
        if p > 0:
            active.append((round(p, 6), round(entry.magnitude * multiplier, 6)))
    assert len(active) == 1, (op, progress, active)
    return active[0]


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
            assert _effective(policy, op, progress) == (config[f"op.{op}.p"], config[f"op.{op}.magnitude"]), (op, epoch)
    # text_mask's p never changed: one entry, whose schedule value is its magnitude
    text_mask = [entry for entry in policy.config.entries if entry.op == "text_mask"]
    assert len(text_mask) == 1 and text_mask[0].magnitude == 1.0 and text_mask[0].p == 0.7


def test_explore_is_one_step_of_pba(space):
    """Ray's own perturbation is not configured, so our explore is the only one; it moves each value
    by exactly ±0.1 (clipped) or redraws it, and is reproducible from its seed."""
    model = space.model
    _, scheduler, variants = pbt_setup(model, seed=3)
    assert scheduler._hyperparam_mutations == {}
    assert isinstance(scheduler._custom_explore_fn, PbaExplore)
    ranges = hyperparameter_ranges(model)
    config = {key: 0.5 for key in ranges}
    moved = [PbaExplore(ranges, seed)(dict(config)) for seed in range(200)]
    steps = [abs(after[key] - 0.5) for after in moved for key in ranges]
    exact = sum(abs(step - 0.1) < 1e-9 for step in steps) / len(steps)
    # resampling happens with probability 0.2 (a redraw lands exactly 0.1 away with probability 0)
    assert 0.8 - 4 * (0.16 / len(steps)) ** 0.5 <= exact <= 0.8 + 4 * (0.16 / len(steps)) ** 0.5
    assert PbaExplore(ranges, 7)(dict(config)) == PbaExplore(ranges, 7)(dict(config))


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

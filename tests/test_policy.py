"""Policies as data: schema round trips and errors, schedules, selection, balance, determinism."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch
import yaml

from autoaug import Policy
from autoaug.policy import PRESETS, SCHEDULES, PolicyError, consistency_kl
from autoaug.policy.schedules import Cosine, Linear, Piecewise, Step, WarmupPeakCooldown
from autoaug.synthetic import example_batch


def policy_of(*entries, **settings) -> Policy:
    return Policy.from_dict({"seed": 7, **settings, "entries": list(entries)})


# ---------------------------------------------------------------- files and round trips
@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip(preset, tmp_path):
    policy = Policy.load(preset)
    assert policy.config.name == preset
    for suffix in (".yaml", ".json"):
        path = policy.dump(tmp_path / f"{preset}{suffix}")
        again = Policy.load(path)
        assert again == policy
        assert again.dumps() == policy.dumps()
    assert policy.dumps() == Policy.load(preset).dumps()  # same policy, same bytes


def test_round_trip_keeps_every_setting(tmp_path):
    data = {
        "schema_version": 1, "name": "custom", "selection": "random_n", "n": 2,
        "clean_fraction": 0.35, "augmented_loss_weight": 0.7, "seed": 3,
        "balance": {"vision": 1.5, "text": 0.5, "cross": 1.0},
        "consistency": {"weight": 0.2, "temperature": 2.0},
        "provenance": {"study": "s", "trial": 4, "metric": "val_accuracy", "value": 0.81,
                       "seeds": {"search": 0}, "search_space_hash": "abc", "package_version": "0.1.0"},
        "entries": [
            {"op": "vision_token_dropout", "p": 0.5, "magnitude": 0.4,
             "schedule": {"kind": "piecewise", "points": [[0.0, 0.2], [0.5, 0.9]]}},
            {"op": "text_token_dropout", "p": 0.9, "magnitude": 0.3, "schedule": "warmup_peak_cooldown",
             "schedule_p": True},
            {"op": "embedding_noise", "magnitude": 0.6, "schedule": {"kind": "step", "milestones": [0.3],
                                                                    "values": [0.1, 1.0]}},
        ],
    }
    policy = Policy.from_dict(data)
    path = policy.dump(tmp_path / "p.yaml")
    loaded = Policy.load(path)
    assert loaded == policy
    assert loaded.config.entries[0].schedule(0.75) == 0.9
    assert loaded.config.provenance.trial == 4
    assert path.read_bytes() == loaded.dump(tmp_path / "q.yaml").read_bytes()


@pytest.mark.parametrize(
    "data, path, message",
    [
        ({"entries": [{"op": "vision_tokn_dropout"}]}, r"entries\[0\]\.op",
         r"unknown op 'vision_tokn_dropout'; did you mean vision_token_dropout"),
        ({"entries": [{"op": "text_mask", "p": 1.2}]}, r"entries\[0\]\.p", r"got 1\.2 \(allowed: \[0\.0, 1\.0\]\)"),
        ({"entries": [{"op": "text_mask"}, {"op": "text_mask", "magnitude": -0.5}]}, r"entries\[1\]\.magnitude",
         r"got -0\.5 \(allowed: \[0\.0, 1\.0\]\)"),
        ({"entries": [{"op": "text_mask", "schedule": "cosin"}]}, r"entries\[0\]\.schedule",
         "unknown schedule kind.*allowed: constant, linear, cosine, step, warmup_peak_cooldown, piecewise"),
        ({"entries": [{"op": "text_mask", "schedule": {"kind": "nope"}}]}, r"entries\[0\]\.schedule",
         "allowed: constant, linear"),
        ({"schema_version": 2, "entries": []}, "schema_version", "newer than this autoaug supports"),
        ({"entries": [{"op": "embedding_noise"}, {"op": "text_mask"}]}, r"entries\[1\]\.op",
         "'text_mask' is a token-stage op listed after embedding-stage entries; order entries by stage"),
        ({"entries": [{"op": "text_mask", "magnitud": 0.3}]}, r"entries\[0\]\.magnitud",
         "unknown field; allowed here: op, p, magnitude"),
        ({"selection": "random_n", "n": 3, "entries": [{"op": "text_mask"}]}, "n", "exceeds the number of entries"),
        ({"selection": "random", "entries": []}, "selection", "'sequential' or 'random_n'"),
        ({"balance": {"vision": -1}}, r"balance\.vision", "allowed: \\[0\\.0, 4\\.0\\]"),
    ],
)
def test_bad_policy_names_file_field_and_allowed_values(data, path, message, tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as raised:
        Policy.load(file)
    text = str(raised.value)
    assert text.startswith(f"{file}: ")
    assert re.search(rf"{file}: {path}: ", text), text
    assert re.search(message, text), text


def test_bad_op_options_are_named(tmp_path):
    with pytest.raises(PolicyError, match=r"entries\[0\]\.options"):
        Policy.from_dict({"entries": [{"op": "vision_token_dropout", "options": {"nonsense": 1}}]}, "x.yaml")


def test_unreadable_or_missing_files(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("entries: [\n")
    with pytest.raises(PolicyError, match=rf"{broken}: cannot be read as a policy: .* at line 2, column 1"):
        Policy.load(broken)
    with pytest.raises(PolicyError, match="no such policy file, and not a preset"):
        Policy.load(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(PolicyError, match="a policy must be a mapping, got list"):
        Policy.load(listed)


def test_cli_show_bad_policy_is_one_line_exit_2(tmp_path):
    file = tmp_path / "bad.yaml"
    file.write_text("entries:\n  - {op: text_mask, p: 3}\n")
    result = subprocess.run([sys.executable, "-m", "autoaug", "show", str(file)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "entries[0].p" in result.stderr and "Traceback" not in result.stderr


def test_cli_show_draws_the_schedules():
    result = subprocess.run([sys.executable, "-m", "autoaug", "show", "aggressive"],
                            capture_output=True, text=True, check=True)
    for op in ("vision_token_dropout", "text_mask", "embedding_noise"):
        assert op in result.stdout
    assert "clean fraction 0.3" in result.stdout and "█" in result.stdout


# ---------------------------------------------------------------- schedules
@pytest.mark.parametrize(
    "schedule, expected",
    [
        (Linear(start=0.2, end=1.0), {0.0: 0.2, 0.5: 0.6, 1.0: 1.0}),
        (Cosine(start=0.0, end=1.0), {0.0: 0.0, 0.5: 0.5, 1.0: 1.0, 0.25: (1 - math.cos(math.pi / 4)) / 2}),
        (Step(milestones=[0.3, 0.6], values=[0.1, 0.5, 1.0]), {0.0: 0.1, 0.29: 0.1, 0.3: 0.5, 0.7: 1.0}),
        (WarmupPeakCooldown(warmup=0.2, cooldown=0.8, start=0.0, end=0.4),
         {0.0: 0.0, 0.1: 0.5, 0.2: 1.0, 0.5: 1.0, 0.8: 1.0, 0.9: 0.7, 1.0: 0.4}),
        (Piecewise(points=[(0.0, 0.1), (0.5, 0.8)]), {0.0: 0.1, 0.49: 0.1, 0.5: 0.8, 1.0: 0.8}),
        (Piecewise(points=[(0.2, 0.0), (0.6, 0.8)], interpolation="linear"), {0.0: 0.0, 0.4: 0.4, 0.9: 0.8}),
    ],
)
def test_schedule_values_at_known_points(schedule, expected):
    for progress, value in expected.items():
        assert schedule(progress) == pytest.approx(value), (schedule, progress)
    assert schedule(-1.0) == schedule(0.0) and schedule(2.0) == schedule(1.0)  # progress is clipped
    assert len(schedule.sparkline(12)) == 12


def test_every_schedule_kind_is_registered():
    assert set(SCHEDULES) == {"constant", "linear", "cosine", "step", "warmup_peak_cooldown", "piecewise"}


def test_schedule_scales_the_applied_magnitude():
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 0.8, "schedule": {"kind": "linear"}},
                       clean_fraction=0.0)
    policy.record = True
    batch = example_batch(batch_size=4)
    for step in (0, 25, 100):
        policy(batch, step=step, total_steps=100)
    assert [round(a.magnitude, 6) for a in policy.applied] == [0.0, 0.2, 0.8]


# ---------------------------------------------------------------- selection and composition
def test_clean_fraction_within_four_binomial_sd():
    fraction, steps, batch_size = 0.4, 40, 64
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 1.0}, clean_fraction=fraction)
    batch = example_batch(batch_size=batch_size, grid=6)
    clean = sum(int((~policy(batch, step=step).augmented).sum()) for step in range(steps))
    # A sample is augmented when eligible (1 - fraction) and its 36 patches see at least one drop,
    # which at p = 0.3 fails with probability 0.7**36 ≈ 3e-6: negligible next to the bound.
    n = steps * batch_size
    assert abs(clean - n * fraction) <= 4 * math.sqrt(n * fraction * (1 - fraction))


def test_random_n_picks_n_distinct_entries_with_uniform_frequency():
    entries = [{"op": name, "magnitude": 1.0} for name in
               ("vision_token_dropout", "text_token_dropout", "vision_random_mask", "text_mask")]
    policy = policy_of(*entries, selection="random_n", n=2, clean_fraction=0.0)
    counts = torch.zeros(4)
    steps, batch_size = 50, 32
    for step in range(steps):
        eligible, chosen = policy._selection(batch_size, step, torch.device("cpu"))
        assert eligible.all()
        assert (chosen.sum(0) == 2).all()  # exactly n distinct entries per sample
        counts += chosen.sum(1)
    n = steps * batch_size
    for count in counts:  # each entry is picked with probability n/E = 1/2
        assert abs(count - n / 2) <= 4 * math.sqrt(n * 0.25)


def test_random_n_applies_only_chosen_entries():
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 1.0}, {"op": "text_token_dropout", "magnitude": 1.0},
                       selection="random_n", n=1, clean_fraction=0.0)
    policy.record = True
    batch = example_batch(batch_size=32)
    policy(batch, step=3)
    vision_active, text_active = (record.params["active"] for record in policy.applied)
    assert not (vision_active & text_active).any()


def test_balance_multiplies_magnitude_per_modality():
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 0.4}, {"op": "text_token_dropout", "magnitude": 0.4},
                       {"op": "modality_dropout", "magnitude": 0.4},
                       balance={"vision": 2.0, "text": 0.5, "cross": 1.5})
    policy.record = True
    policy(example_batch(), step=0)
    assert [record.magnitude for record in policy.applied] == pytest.approx([0.8, 0.2, 0.6])


def test_augmented_loss_weight_is_written_into_the_batch():
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 1.0}, augmented_loss_weight=0.25)
    out = policy(example_batch(batch_size=32, grid=6), step=1)
    assert out.augmented.any() and (~out.augmented).any()
    assert torch.equal(out.loss_weight, torch.where(out.augmented, 0.25, 1.0))


# ---------------------------------------------------------------- determinism and replay
def test_seeded_policy_is_deterministic_per_step_and_replays_exactly():
    policy = Policy.load("aggressive")
    policy.seed = 11
    batch = example_batch(batch_size=16, embed_dim=None)
    first = policy(batch, step=5, total_steps=10)
    second = policy(batch, step=5, total_steps=10)
    other_step = policy(batch, step=6, total_steps=10)
    for name, tensor in first.tensors().items():
        assert torch.equal(tensor, second.tensors()[name]), name
    assert not torch.equal(first.vision_mask, other_step.vision_mask)
    policy.record = True
    recorded = policy(batch, step=5, total_steps=10)
    replayed = policy.replay(batch, policy.applied)
    for name, tensor in recorded.tensors().items():
        assert torch.equal(tensor, replayed.tensors()[name]), name


def test_stages_apply_separately_and_share_the_clean_set():
    policy = policy_of({"op": "vision_token_dropout", "magnitude": 1.0}, {"op": "embedding_noise", "magnitude": 1.0},
                       clean_fraction=0.5)
    token_batch = example_batch(batch_size=32, grid=6)
    embedded = example_batch(batch_size=32, grid=6, embed_dim=8)
    after_token = policy(token_batch, step=2)                      # token stage inferred
    after_embedding = policy(embedded, step=2, stage="embedding")
    assert torch.equal(after_token.augmented, after_embedding.augmented)
    assert torch.equal(after_token.vision, token_batch.vision)     # embedding entries did not run
    with pytest.raises(Exception, match="stage: 'tokens' is not one of pixel, token, embedding"):
        policy(token_batch, stage="tokens")


def test_none_preset_is_the_identity():
    batch = example_batch()
    out = Policy.load("none")(batch, step=0)
    assert out is batch


# ---------------------------------------------------------------- consistency
def test_consistency_kl():
    logits = torch.randn(6, 4)
    assert consistency_kl(logits, logits).abs() < 1e-6
    augmented = (logits + torch.randn(6, 4)).requires_grad_()
    clean = logits.clone().requires_grad_()
    loss = consistency_kl(clean, augmented, temperature=2.0)
    assert loss > 0
    loss.backward()
    assert clean.grad is None and augmented.grad.abs().sum() > 0
    policy = policy_of(consistency={"weight": 0.5, "temperature": 2.0})
    assert policy.consistency_loss(logits, augmented).item() == pytest.approx(0.5 * loss.item())
    assert policy_of().consistency_loss(logits, augmented).item() == 0.0


def test_every_policy_model_is_strict_through_one_base():
    """Policies and schedules (and search spaces, which import it from the schema) share `StrictModel`:
    an unknown key is refused and a validated model cannot be changed."""
    import pydantic

    from autoaug.policy import schema, schedules
    from autoaug.policy.strict import StrictModel

    assert schema.StrictModel is StrictModel
    for model in (schema.PolicyConfig, schema.PolicyEntry, schema.Balance, schema.Provenance, schedules.Cosine):
        assert issubclass(model, StrictModel), model
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        schedules.Cosine(kind="cosine", strat=0.2)
    entry = schema.PolicyEntry(op="text_mask")
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        entry.p = 0.5

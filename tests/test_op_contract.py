"""The contract every registered op follows (autoaug/ops/base.py), checked for each op by name.

Op-specific semantics live in the per-family test files; this file makes sure no op can skip the
shared rules: magnitude 0 returns the input itself (and each op's own code at strength 0 changes
nothing), inactive samples are untouched, replay is exact, the same
seed gives the same batch, the input is never mutated, bad magnitudes raise a clear error, and at
magnitude 1 the op actually changes something.
"""

from __future__ import annotations

import math

import pytest
import torch

from autoaug import MultimodalBatch, ops
from autoaug.batch import IGNORE_INDEX
from autoaug.errors import OpArgumentError
from conftest import assert_batches_equal, batch_for, generator

ALL_OPS = ops.names()


def test_catalogue_names_are_registered():
    required = {
        "vision_token_dropout", "text_token_dropout", "modality_dropout", "text_mask",
        "vision_random_mask", "vision_block_mask", "vision_grid_mask", "vision_attention_mask",
        "embedding_noise", "text_token_substitution", "vision_patch_substitution", "token_mixup",
        "token_cutmix", "mergemix", "vision_permute_order", "vision_scramble_positions",
        "vision_block_shuffle", "vision_reversal", "modality_order_swap", "frame_reversal",
        "frame_shuffle", "random_truncation", "saliency_truncation", "vision_token_budget",
        "padding_side",
    }
    assert required <= set(ALL_OPS), sorted(required - set(ALL_OPS))
    assert len(ops.names(stage="pixel")) >= 5


@pytest.mark.parametrize("name", ALL_OPS)
def test_metadata(name):
    # stage, modality and the docstring are enforced by `register` at import (tested below); what it
    # does not check is that the range is a real interval and that `autoaug ops` has a summary to show
    row = ops.op_class(name).describe()
    low, high = row["magnitude_range"]
    assert math.isfinite(low) and math.isfinite(high) and low < high
    assert isinstance(row["mixes_labels"], bool) and row["summary"]


def _op_class(**overrides):
    attributes = {"__doc__": "Does nothing; magnitude in [0, 1].", "name": "contract_probe",
                  "stage": "token", "modality": "vision", "parameter": "rate", "default_range": (0.0, 1.0)}
    attributes.update(overrides)
    return type("ContractProbe", (ops.Op,), {k: v for k, v in attributes.items() if v is not None})


@pytest.mark.parametrize("overrides, message", [
    ({"stage": "somewhere"}, "stage must be one of"),
    ({"modality": "audio"}, "modality one of"),
    ({"__doc__": "  "}, "needs a docstring"),
    ({"name": "text_mask"}, "registered twice"),
])
def test_the_registry_refuses_an_op_that_breaks_the_rules(overrides, message):
    from autoaug.ops.registry import register

    with pytest.raises(TypeError, match=message):
        register(_op_class(**overrides))
    assert "contract_probe" not in ops.names()


@pytest.mark.parametrize("name", ALL_OPS)
def test_magnitude_zero_returns_the_input_itself(name, device):
    """The documented contract: at magnitude 0 every sample is inactive and the batch comes back as is."""
    op = ops.get(name)
    batch = batch_for(op, device)
    params = op.sample_params(batch, 0.0, generator(0))
    assert not params["active"].any()
    assert op(batch, 0.0, generator(0)) is batch


@pytest.mark.parametrize("name", ALL_OPS)
def test_own_code_at_strength_zero_is_identity(name, device):
    """The op's own `_sample`/`_apply` at its magnitude-0 parameter, on every sample, changes nothing
    (up to resampling round-off for the geometric pixel ops); MLM labels may appear, all ignored.
    Users never reach this path (the base class returns the input at magnitude 0), but a schedule
    ramping up from 0 or a searched magnitude near 0 reaches its neighbourhood: an op whose own code
    is not the identity here is discontinuous at 0 (the old `vision_block_mask`, which masked a
    1 x 1 block of every sample at rate 0, failed here)."""
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True)
    params = op._sample(batch, op.strength(0.0), generator(0, device))
    applies = params.pop("applies", None)
    active = torch.ones(batch.batch_size, dtype=torch.bool, device=device) if applies is None else applies
    out = op._apply(batch, params, active)
    before = batch.tensors()
    for field, tensor in out.tensors().items():
        if field == "augmented":
            continue
        if field not in before:
            assert field == "mlm_labels" and (tensor == IGNORE_INDEX).all(), f"{name} created {field}"
            continue
        if tensor.is_floating_point():
            assert torch.allclose(tensor, before[field], atol=1e-5), f"{name} changed {field} at strength 0"
        else:
            assert torch.equal(tensor, before[field]), f"{name} changed {field} at strength 0"


@pytest.mark.parametrize("name", ALL_OPS)
def test_small_magnitude_runs_the_op(name, device):
    """Just above 0 the op's own code runs (samples stay active) and yields a valid batch."""
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True)
    params = op.sample_params(batch, 0.05, generator(2))
    out = op.apply(batch, params)
    out.validate()
    assert out.augmented.equal(params["active"])


@pytest.mark.parametrize("name", ALL_OPS)
def test_changes_something_at_full_magnitude(name, device):
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True)
    out = op(batch, 1.0, generator(0))
    out.validate()  # shapes, dtypes and devices still agree
    before = batch.tensors()
    changed = [field for field, tensor in out.tensors().items()
               if field != "augmented" and (field not in before or not torch.equal(tensor, before[field]))]
    assert changed, f"{name} at magnitude 1 changed nothing"
    assert out.augmented.any()


@pytest.mark.parametrize("name", ALL_OPS)
def test_inactive_samples_are_untouched(name, device):
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True)
    active = torch.tensor([True, False] * 4, device=device)
    out = op(batch, 1.0, generator(1), active=active)
    for field, tensor in out.tensors().items():
        before = batch.tensors().get(field)
        if before is None:  # a field the op created: only MLM labels may appear, empty where inactive
            assert field == "mlm_labels", f"{name} created an unexpected field {field}"
            assert (tensor[~active] == IGNORE_INDEX).all()
            continue
        if tensor.dim() == 0 or tensor.shape[0] != batch.batch_size or field == "text_embedding_table":
            continue
        assert torch.equal(tensor[~active], before[~active]), f"{name} changed inactive samples' {field}"
    assert not out.augmented[~active].any()


# Ops whose docstring says they draw nothing ("no randomness"): their params may not depend on the seed.
SEEDLESS_OPS = {"vision_attention_mask", "saliency_truncation"}


@pytest.mark.parametrize("name", ALL_OPS)
def test_replay_is_exact_and_seed_is_deterministic(name, device):
    """Same params, same batch; same seed, same batch; another seed, other params (unless the op is
    documented as drawing nothing). Two other seeds, because 8 coins at p = 0.7 can coincide (seeds 3
    and 4 of torch's CPU generator do). Broken variant seen failing: `sampling.uniform` drawing from a
    fixed generator instead of the one passed (every op built on it ignores its seed)."""
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True)
    params = op.sample_params(batch, 0.7, generator(3))
    first, second = op.apply(batch, params), op.apply(batch, params)
    assert_batches_equal(first, second)
    assert_batches_equal(first, op(batch, 0.7, generator(3)))
    others = [op.sample_params(batch, 0.7, generator(seed)) for seed in (4, 5)]
    differs = [any(not torch.equal(value, other[key]) for key, value in params.items()) for other in others]
    if name in SEEDLESS_OPS:
        assert not any(differs), f"{name} is documented as deterministic but its params depend on the seed"
    else:
        assert any(differs), f"{name}: seeds 3, 4 and 5 drew the same params (the seed is ignored)"
    for key, value in params.items():
        assert isinstance(value, torch.Tensor), f"{name}: param {key} is not a tensor"
        assert value.device.type == torch.device(device).type, f"{name}: param {key} on {value.device}"


@pytest.mark.parametrize("name", ALL_OPS)
def test_input_batch_is_not_mutated(name, device):
    op = ops.get(name)
    batch = batch_for(op, device, with_saliency=True, with_alignment=True)
    snapshot = {field: tensor.clone() for field, tensor in batch.tensors().items()}
    op(batch, 1.0, generator(0))
    for field, tensor in batch.tensors().items():
        assert torch.equal(tensor, snapshot[field]), f"{name} mutated its input's {field}"


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", None, True])
def test_bad_magnitude_is_a_clear_error(name, bad):
    op = ops.get(name)
    with pytest.raises(OpArgumentError, match=rf"{name}: magnitude must be a number in \[0, 1\]"):
        op.sample_params(batch_for(op), bad, generator(0))


@pytest.mark.parametrize("name", ALL_OPS)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_small_and_odd_batches(name, batch_size):
    op = ops.get(name)
    out = op(batch_for(op, batch_size=batch_size, with_saliency=True), 1.0, generator(0))
    assert isinstance(out, MultimodalBatch) and out.batch_size == batch_size
    out.validate()


@pytest.mark.parametrize("name", ALL_OPS)
def test_output_labels_stay_a_distribution(name):
    op = ops.get(name)
    out = op(batch_for(op), 1.0, generator(0))
    sums = out.labels.sum(1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert (out.labels >= 0).all()
    if not op.mixes_labels:
        assert torch.equal(out.labels, batch_for(op).labels)


def test_unknown_op_names_close_matches():
    from autoaug.ops.registry import unknown_op_message

    message = unknown_op_message("vision_token_dropuot")
    assert message.startswith("unknown op 'vision_token_dropuot'; did you mean vision_token_dropout")
    assert message.endswith("allowed: " + ", ".join(ops.names()))
    with pytest.raises(KeyError) as raised:
        ops.get("vision_token_dropuot")
    assert str(raised.value) == message  # the registry, policies and search spaces say the same line
    assert unknown_op_message("text_mask_x", allowed=["text_mask", "vision_token_dropout"]) == \
        "unknown op 'text_mask_x'; did you mean text_mask? allowed: text_mask, vision_token_dropout"
    assert unknown_op_message("zzz", allowed=["text_mask"]) == "unknown op 'zzz'; allowed: text_mask"


def test_bad_active_mask_is_a_clear_error():
    op = ops.get("vision_token_dropout")
    batch = batch_for(op)
    with pytest.raises(OpArgumentError, match="active must be a bool tensor of shape"):
        op.sample_params(batch, 0.5, generator(0), active=torch.ones(3, dtype=torch.bool))


def test_text_content_is_the_one_rule_for_editable_text():
    """``MultimodalBatch.text_content`` (every op's editable text) is present and not special: no
    [CLS]/[SEP]/padding, nothing dropped, a special vocabulary id never, an ordinary word always."""
    from autoaug.batch import TextVocabulary
    from autoaug.synthetic import example_batch

    batch = example_batch(batch_size=4, text_len=8, seed=0)
    text_mask = batch.text_mask.clone()
    text_mask[:, 2] = False  # a word an earlier op dropped
    ids = batch.text_ids.clone()
    ids[0, 4] = 77  # a special id of the vocabulary, in the middle of the (full-length) first text
    ids[0, 3] = 50  # an ordinary word
    vocab = TextVocabulary(vocab_size=128, pad_id=0, mask_id=3, special_ids=(0, 1, 2, 3, 77))
    rebuilt = MultimodalBatch(text_ids=ids, labels=batch.labels, vision=batch.vision, text_mask=text_mask, vocab=vocab)
    content = rebuilt.text_content
    assert torch.equal(content, text_mask & ~rebuilt.text_special)
    assert not content[:, 2].any() and not content[0, 4] and not content[~text_mask].any()
    assert content[0, 3] and not content[:, 0].any()  # an ordinary kept word; [CLS] never

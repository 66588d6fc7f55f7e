"""The policy in a user's training: Lightning callback (training batches only) and DataLoader collator."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from autoaug import MultimodalBatch, Policy
from autoaug.synthetic import example_batch

POOL = example_batch(batch_size=48, grid=4, patch_dim=6, text_len=8, num_classes=3, seed=5)


def collate_from_pool(indices: list[int]) -> MultimodalBatch:
    """A base collate: slices the synthetic pool (what a user's collate would build from samples)."""
    index = torch.tensor(indices)
    return MultimodalBatch(
        vision=POOL.vision[index], text_ids=POOL.text_ids[index], text_mask=POOL.text_mask[index],
        labels=POOL.labels[index], vocab=POOL.vocab,
    )


def strong_policy(seed: int = 0) -> Policy:
    return Policy.from_dict({
        "seed": seed, "clean_fraction": 0.0,
        "entries": [{"op": "vision_token_dropout", "magnitude": 1.0},
                    {"op": "text_token_dropout", "magnitude": 1.0},
                    {"op": "embedding_noise", "magnitude": 1.0}],
    })


class Recorder(L.LightningModule):
    """Tiny model that records what each step saw, and uses `augment` for the embedding stage."""

    def __init__(self) -> None:
        super().__init__()
        self.embed_text = torch.nn.Embedding(POOL.vocab.vocab_size, 6)
        self.head = torch.nn.Linear(6, 3)
        self.seen: dict[str, list[MultimodalBatch]] = {"train": [], "val": [], "test": []}
        self.embedding_stage_changed: list[bool] = []

    def _forward(self, batch: MultimodalBatch, split: str) -> torch.Tensor:
        self.seen[split].append(batch.replace())
        embedded = batch.replace(text_embeddings=self.embed_text(batch.text_ids))
        augmented = self.augment(embedded, "embedding")
        if split == "train":
            self.embedding_stage_changed.append(not torch.equal(augmented.text_embeddings, embedded.text_embeddings))
        else:
            assert augmented is embedded
        keep = augmented.vision_mask.unsqueeze(-1).float()
        pooled = (augmented.vision * keep).sum(1) / keep.sum(1).clamp_min(1) + augmented.text_embeddings.mean(1)
        return torch.nn.functional.cross_entropy(self.head(pooled), augmented.labels)

    def training_step(self, batch, batch_idx):
        return self._forward(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._forward(batch, "val")

    def test_step(self, batch, batch_idx):
        self._forward(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    return DataLoader(list(range(48)), batch_size=16, collate_fn=collate_from_pool, shuffle=False)


ACCELERATOR = {"cpu": "cpu", "cuda": "gpu"}  # the `device` fixture's names as Lightning accelerators


def test_lightning_callback_augments_training_batches_only(device):
    module = Recorder()
    trainer = L.Trainer(max_epochs=1, accelerator=ACCELERATOR[device], devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[strong_policy().lightning_callback()])
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader())
    trainer.test(module, dataloaders=loader(), verbose=False)
    clean = [collate_from_pool(list(range(start, start + 16))) for start in (0, 16, 32)]
    assert len(module.seen["train"]) == 3
    for seen, original in zip(module.seen["train"], clean):
        assert seen.device.type == device  # augmented where the model trains
        assert seen.augmented.all()
        assert not torch.equal(seen.vision_mask.cpu(), original.vision_mask)
    assert all(module.embedding_stage_changed)
    for split in ("val", "test"):
        assert module.seen[split], split
        for seen, original in zip(module.seen[split], clean):
            for name, tensor in original.tensors().items():
                assert torch.equal(seen.tensors()[name].cpu(), tensor), (split, name)


def test_collator_under_a_dataloader_with_workers():
    policy = strong_policy(seed=3)
    policy.set_progress(1, 2)

    def run(seed: int) -> list[MultimodalBatch]:
        data = DataLoader(list(range(48)), batch_size=8, num_workers=2, shuffle=True,
                          collate_fn=policy.collator(collate_from_pool),
                          generator=torch.Generator().manual_seed(seed))
        return list(data)

    first, again, other = run(0), run(0), run(1)
    assert len(first) == 6
    for batch in first:
        assert isinstance(batch, MultimodalBatch) and batch.augmented.all()
    for left, right in zip(first, again):  # a seeded DataLoader repeats exactly
        assert torch.equal(left.vision_mask, right.vision_mask) and torch.equal(left.text_mask, right.text_mask)
    assert any(not torch.equal(left.vision_mask, right.vision_mask) for left, right in zip(first, other))
    masks = torch.stack([batch.vision_mask for batch in first])
    assert not all(torch.equal(masks[0], mask) for mask in masks[1:])  # batches differ from each other


# ---------------------------------------------------------------------- schedules need the run's length
def linear_policy() -> Policy:
    """One entry whose magnitude rises linearly from 0 to 1 over the run (recorded per application)."""
    policy = Policy.from_dict({"seed": 0, "clean_fraction": 0.0, "entries": [
        {"op": "vision_token_dropout", "magnitude": 1.0, "schedule": {"kind": "linear", "start": 0.0, "end": 1.0}}]})
    policy.record = True
    return policy


class UnsizedBatches(torch.utils.data.IterableDataset):
    """Three batches from a loader without a length: the trainer cannot know the run's length."""

    def __iter__(self):
        return iter([collate_from_pool(list(range(start, start + 16))) for start in (0, 16, 32)])


def fit(callback: L.Callback, train, **trainer_options) -> None:
    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer = L.Trainer(callbacks=[callback], **{**options, **trainer_options})
    trainer.fit(Recorder(), train_dataloaders=train)


def applied_magnitudes(policy: Policy) -> list[float]:
    return [round(record.magnitude, 6) for record in policy.applied]


def test_callback_follows_a_linear_schedule_over_the_trainers_length():
    policy = linear_policy()
    fit(policy.lightning_callback(), loader(), max_epochs=2)  # 3 batches x 2 epochs = 6 steps
    assert applied_magnitudes(policy) == [round(step / 6, 6) for step in range(6)]


def test_callback_refuses_to_guess_an_unknown_length():
    from autoaug.errors import AutoaugInputError

    policy = linear_policy()
    with pytest.raises(AutoaugInputError, match=r"entries\[0\] \(linear\) follow training progress.*total_steps"):
        fit(policy.lightning_callback(), DataLoader(UnsizedBatches(), batch_size=None), max_epochs=2)
    assert policy.applied == []  # nothing ran at a guessed magnitude


def test_callback_takes_the_length_when_the_trainer_cannot_tell():
    from autoaug.policy.integrations import PolicyCallback

    policy = linear_policy()
    fit(PolicyCallback(policy, total_steps=6), DataLoader(UnsizedBatches(), batch_size=None), max_epochs=2)
    assert applied_magnitudes(policy) == [round(step / 6, 6) for step in range(6)]


def test_collator_follows_a_linear_schedule_given_the_length():
    from autoaug.policy.integrations import PolicyCollator

    policy = linear_policy()
    collate = PolicyCollator(policy, collate_from_pool, total_steps=6)
    list(DataLoader(list(range(48)), batch_size=8, collate_fn=collate))
    assert applied_magnitudes(policy) == [round(step / 6, 6) for step in range(6)]


def test_collator_length_count_is_shared_by_workers():
    from autoaug.policy.integrations import PolicyCollator

    collate = PolicyCollator(linear_policy(), collate_from_pool, total_steps=6)
    batches = list(DataLoader(list(range(48)), batch_size=8, num_workers=2, collate_fn=collate))
    assert len(batches) == 6 and collate._collated.value == 6


def test_collator_refuses_a_schedule_it_cannot_follow():
    from autoaug.errors import AutoaugInputError
    from autoaug.policy.integrations import PolicyCollator

    policy = linear_policy()
    with pytest.raises(AutoaugInputError, match=r"entries\[0\] \(linear\).*total_steps"):
        policy.collator(collate_from_pool)
    driven = PolicyCollator(policy, collate_from_pool, progress_from_set_progress=True)
    policy.set_progress(3, 6)
    driven(list(range(8)))
    assert applied_magnitudes(policy) == [0.5]
    assert strong_policy().collator(collate_from_pool)  # constant schedules need no length


def test_a_batch_knows_its_stage_and_the_integrations_need_no_policy_import():
    """`MultimodalBatch.stage` is the one stage rule (pixel -> token -> embedding); the integrations read it
    and type the policy structurally, so `autoaug.policy.integrations` never imports `autoaug.policy.policy`
    (which builds its classes), not even inside a function."""
    import ast
    import inspect

    from autoaug.policy import Policy, batch_stage, integrations
    from autoaug.synthetic import example_batch

    pixel = example_batch(batch_size=2, image_size=16)
    pixel = pixel.replace(vision=None, vision_mask=None, vision_positions=None, vision_masked=None)
    token = example_batch(batch_size=2)
    embedding = example_batch(batch_size=2, embed_dim=8)
    assert [b.stage for b in (pixel, token, embedding)] == ["pixel", "token", "embedding"]
    assert [batch_stage(b) for b in (pixel, token, embedding)] == ["pixel", "token", "embedding"]
    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(integrations)))
                if isinstance(node, ast.ImportFrom)}
    assert "autoaug.policy.policy" not in imported and "autoaug.policy" not in imported
    policy = Policy.load("moderate")
    assert isinstance(policy.lightning_callback(), integrations.PolicyCallback)
    for member in ("config", "source", "progress", "apply_stage", "set_progress"):
        assert hasattr(policy, member), member  # Policy satisfies PolicyLike


# ---------------------------------------------------------------------- the public way in (README's examples)
def ramp_policy() -> Policy:
    """One entry at magnitude 0.5 whose schedule rises linearly from 0.2 to 0.9 (recorded per application).

    Start and end away from 0 and 1, and a magnitude below 1, so a run that ignored the schedule (constant
    0.5), read progress as 0 or 1 throughout, or used step/(total-1) gives other magnitudes."""
    policy = Policy.from_dict({"seed": 0, "clean_fraction": 0.0, "entries": [
        {"op": "vision_token_dropout", "magnitude": 0.5, "schedule": {"kind": "linear", "start": 0.2, "end": 0.9}}]})
    policy.record = True
    return policy


def scheduled_magnitudes(policy: Policy, total: int) -> list[float]:
    """What the entry's own schedule object says at progress step/total, for steps 0..total-1."""
    entry = policy.config.entries[0]
    return [round(entry.magnitude * entry.schedule(step / total), 6) for step in range(total)]


def test_the_integrations_are_importable_from_the_package_and_from_autoaug_policy():
    # Catches: the classes left reachable only as autoaug.policy.integrations.* (the README imports them
    # from autoaug), or two different objects behind the two names.
    import autoaug
    import autoaug.policy
    from autoaug.policy import integrations

    for name in ("PolicyCollator", "PolicyCallback"):
        assert getattr(autoaug, name) is getattr(autoaug.policy, name) is getattr(integrations, name), name
        assert name in autoaug.__all__ and name in autoaug.policy.__all__, name
    with pytest.raises(AttributeError, match="no attribute 'PolicyCollate'"):
        autoaug.PolicyCollate  # a typo still fails as a missing attribute, not as something else


def test_importing_autoaug_does_not_load_lightning():
    # Catches: an eager `from autoaug.policy.integrations import ...` in an __init__ (seconds of Lightning
    # import on every `autoaug --help`). Run in a fresh interpreter: this test process has Lightning loaded.
    import subprocess
    import sys

    code = "import sys, autoaug; assert 'lightning' not in sys.modules; autoaug.PolicyCollator; " \
           "assert 'lightning' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_policy_collator_with_total_steps_follows_the_schedule():
    # Catches: Policy.collator without total_steps (the README's example refused every scheduled policy),
    # and a total_steps accepted but not passed on (the collator would refuse the schedule again).
    from autoaug import PolicyCollator

    policy = ramp_policy()
    list(DataLoader(list(range(48)), batch_size=8, collate_fn=policy.collator(collate_from_pool, total_steps=6)))
    assert applied_magnitudes(policy) == scheduled_magnitudes(policy, 6)
    assert applied_magnitudes(policy) != [0.25] * 6  # the schedule did something: not its value at 0.5 throughout

    direct = ramp_policy()
    list(DataLoader(list(range(48)), batch_size=8, collate_fn=PolicyCollator(direct, collate_from_pool, total_steps=6)))
    assert applied_magnitudes(direct) == scheduled_magnitudes(direct, 6)


def test_policy_collator_reads_set_progress_when_asked():
    # Catches: progress_from_set_progress not passed through Policy.collator (it would refuse the schedule).
    policy = ramp_policy()
    collate = policy.collator(collate_from_pool, progress_from_set_progress=True)
    for step in range(4):
        policy.set_progress(step, 4)
        collate(list(range(8)))
    assert applied_magnitudes(policy) == scheduled_magnitudes(policy, 4)


def test_lightning_callback_takes_total_steps():
    # Catches: Policy.lightning_callback without total_steps, so a loader without a length left a scheduled
    # policy no way in but the integrations module's class.
    policy = ramp_policy()
    fit(policy.lightning_callback(total_steps=6), DataLoader(UnsizedBatches(), batch_size=None), max_epochs=2)
    assert applied_magnitudes(policy) == scheduled_magnitudes(policy, 6)


def test_lightning_callback_reads_the_trainers_estimated_optimizer_steps():
    # The default length is trainer.estimated_stepping_batches: with gradient accumulation 2, 4 batches x 3
    # epochs make 6 optimizer steps, and each pair of batches shares one global step. Catches: counting
    # batches (12) instead of optimizer steps, or assuming the length of one epoch.
    policy = ramp_policy()
    seen_total = []

    class Spy(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen_total.append(trainer.estimated_stepping_batches)

    options = dict(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer = L.Trainer(callbacks=[policy.lightning_callback(), Spy()], max_epochs=3, accumulate_grad_batches=2,
                        **options)
    four_batches = DataLoader(list(range(48)), batch_size=12, collate_fn=collate_from_pool)
    trainer.fit(Recorder(), train_dataloaders=four_batches)
    assert seen_total == [6]
    expected = scheduled_magnitudes(policy, 6)
    assert applied_magnitudes(policy) == [value for value in expected for _ in range(2)]

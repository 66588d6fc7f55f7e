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

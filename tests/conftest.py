"""Shared fixtures: the device matrix and batches shaped for each op's stage."""

from __future__ import annotations

import pytest
import torch

from autoaug import ops
from autoaug.synthetic import example_batch

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def batch_for(op: ops.Op, device: str = "cpu", **overrides):
    """A batch with what ``op``'s stage needs: images for pixel ops, embeddings for embedding ops,
    two frames for frame ops."""
    options = dict(batch_size=8, grid=4, patch_dim=12, text_len=12, seed=0, device=device)
    if op.stage == "pixel":
        options["image_size"] = 32
    if op.stage == "embedding":
        options["embed_dim"] = 16
    if op.name.startswith("frame_"):
        options["num_frames"] = 4
    options.update(overrides)
    return example_batch(**options)


def generator(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def assert_batches_equal(left, right) -> None:
    """Every tensor field bit-identical (and the same fields present)."""
    left_tensors, right_tensors = left.tensors(), right.tensors()
    assert left_tensors.keys() == right_tensors.keys()
    for name, tensor in left_tensors.items():
        assert torch.equal(tensor, right_tensors[name]), f"field {name} differs"

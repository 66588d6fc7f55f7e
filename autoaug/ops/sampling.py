"""Random draws from an explicit `torch.Generator`, returned on the batch's device.

Draws happen on the generator's device (torch requires it) and are then moved, so a CPU generator
gives the same numbers whatever device the batch lives on, and the same seed gives the same params.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def uniform(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    """U[0, 1) of the given shape."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device).to(device)


def normal(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    """Standard normal of the given shape."""
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def bernoulli(generator: torch.Generator, probability, shape: Sequence[int], device: torch.device) -> Tensor:
    """Bool tensor, True with ``probability`` (a float or a tensor broadcastable to ``shape``)."""
    return uniform(generator, shape, device) < probability


def integers(generator: torch.Generator, low: int, high: int, shape: Sequence[int], device: torch.device) -> Tensor:
    """Integers uniform in [low, high)."""
    return torch.randint(low, high, tuple(shape), generator=generator, device=generator.device).to(device)


def random_scores(generator: torch.Generator, shape: Sequence[int], device: torch.device) -> Tensor:
    """Per-row random keys: ``argsort`` of them is a uniform random permutation of each row."""
    return uniform(generator, shape, device)


def random_permutations(generator: torch.Generator, rows: int, length: int, device: torch.device) -> Tensor:
    """``[rows, length]`` long: an independent uniform permutation of ``range(length)`` per row."""
    return random_scores(generator, (rows, length), device).argsort(dim=1)


def random_partners(generator: torch.Generator, batch_size: int, device: torch.device) -> Tensor:
    """For each sample, a uniformly chosen *other* sample of the batch (itself only when B == 1).

    ``(i + shift_i) % B`` with ``shift_i`` uniform in [1, B): no sample is paired with itself, and odd
    batch sizes need no special case (timm #1304).
    """
    index = torch.arange(batch_size, device=device)
    if batch_size == 1:
        return index
    return (index + integers(generator, 1, batch_size, (batch_size,), device)) % batch_size


def beta(generator: torch.Generator, alpha: float, shape: Sequence[int], device: torch.device) -> Tensor:
    """Beta(alpha, alpha) samples.

    torch's Gamma/Beta samplers take no generator, so the global RNG is seeded from ``generator``
    inside `torch.random.fork_rng` (which restores it afterwards): reproducible, and the caller's
    global RNG state is untouched.
    """
    seed = derived_seed(generator)
    fork_devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices, device_type=generator.device.type):
        torch.manual_seed(seed)
        concentration = torch.full(tuple(shape), float(alpha), device=generator.device)
        samples = torch.distributions.Beta(concentration, concentration).sample()
    return samples.to(device)


def derived_seed(generator: torch.Generator) -> int:
    """One integer seed drawn from ``generator``, for libraries that only use the global RNG."""
    return int(integers(generator, 0, 2**62, (1,), generator.device).item())

"""Overhead of a policy attached to a Hugging Face LLaVA: a training step with the moderate preset vs without.

Two copies of the same random-init `LlavaForConditionalGeneration` (same weights), one with
``attach(Policy.load("moderate"), model)``, each running full training steps (forward with labels,
backward, SGD step) on the same fixed batch. Steps alternate between the two sides so machine noise
hits both equally; medians are reported with their ratio (attached / plain). The ratio includes
everything the policy adds: the hook re-running the vision tower through ``get_image_features``
(instead of the model doing it), building the `MultimodalBatch`, the ops, and the changed masks.

Sizes: ``tiny`` is the issue's 41k-parameter model (4 x 80 tokens); ``base`` a random-init LLaVA of
about 100 M parameters (CLIP-style tower 224 px / patch 16 -> 196 vision tokens, Llama-style decoder of
width 768, 8 layers, 32k vocabulary) on 2 x 230 tokens.

    .venv/bin/python benchmarks/transformers_overhead.py [--sizes tiny,base] [--repeats 20] [--base-repeats 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

from autoaug import Policy
from autoaug.integrations.transformers import attach

SIZES = {
    "tiny": {
        "text": {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 128},
        "vision": {"image_size": 32, "patch_size": 4, "hidden_size": 32, "intermediate_size": 37,
                   "num_hidden_layers": 2, "num_attention_heads": 4, "projection_dim": 32},
        "batch": 4, "text_tokens": 16,
    },
    "base": {
        "text": {"vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 8,
                 "num_attention_heads": 12, "num_key_value_heads": 12, "max_position_embeddings": 512},
        "vision": {"image_size": 224, "patch_size": 16, "hidden_size": 384, "intermediate_size": 1536,
                   "num_hidden_layers": 6, "num_attention_heads": 6, "projection_dim": 384},
        "batch": 2, "text_tokens": 34,
    },
}


def build(size: str) -> tuple[LlavaForConditionalGeneration, dict]:
    """A random-init LLaVA of ``size`` and one fixed training batch (image tokens, prompt, 8 answer tokens)."""
    spec = SIZES[size]
    image_tokens = (spec["vision"]["image_size"] // spec["vision"]["patch_size"]) ** 2
    config = LlavaConfig(
        text_config={"model_type": "llama", **spec["text"]},
        vision_config={"model_type": "clip_vision_model", **spec["vision"]},
        image_token_index=0, vision_feature_layer=-1, vision_feature_select_strategy="default",
        image_seq_length=image_tokens,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(1)
    batch, length = spec["batch"], 1 + image_tokens + spec["text_tokens"]
    input_ids = torch.randint(5, spec["text"]["vocab_size"], (batch, length), generator=generator)
    input_ids[:, 1:1 + image_tokens] = 0
    labels = torch.full_like(input_ids, -100)
    labels[:, -8:] = input_ids[:, -8:]
    pixels = torch.randn(batch, 3, spec["vision"]["image_size"], spec["vision"]["image_size"], generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixels,
              "labels": labels}
    return model, inputs


def measure(size: str, repeats: int, warmup: int = 2) -> dict:
    plain, inputs = build(size)
    augmented, _ = build(size)
    attach(Policy.load("moderate"), augmented)
    sides = {"plain": plain, "moderate": augmented}
    optimizers = {name: torch.optim.SGD(model.parameters(), lr=1e-4) for name, model in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for model in sides.values():
        model.train()
    for repeat in range(warmup + repeats):
        for name, model in sides.items():
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            model(**inputs).loss.backward()
            optimizers[name].step()
            elapsed = time.perf_counter() - start
            if repeat >= warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "size": size,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "tokens": list(inputs["input_ids"].shape),
        "repeats": repeats,
        "median_step_s": medians,
        "ratio_moderate_over_plain": medians["moderate"] / medians["plain"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,base")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per side for tiny")
    parser.add_argument("--base-repeats", type=int, default=4, help="timed steps per side for base")
    parser.add_argument("--json", dest="json_path", default=None, help="also write raw numbers here")
    args = parser.parse_args()
    results = []
    for size in args.sizes.split(","):
        if size not in SIZES:
            parser.error(f"--sizes: {size!r} is not one of {', '.join(SIZES)}")
        result = measure(size, args.base_repeats if size == "base" else args.repeats)
        results.append(result)
        medians = result["median_step_s"]
        print(f"{size:5s} {result['parameters'] / 1e6:7.2f} M params, tokens {result['tokens']}: "
              f"plain {medians['plain'] * 1e3:8.1f} ms, moderate {medians['moderate'] * 1e3:8.1f} ms, "
              f"ratio {result['ratio_moderate_over_plain']:.3f}  (median of {result['repeats']})", flush=True)
    report = {"threads": torch.get_num_threads(), "load_average": os.getloadavg(), "results": results}
    print(json.dumps(report))
    if args.json_path:
        with open(args.json_path, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()

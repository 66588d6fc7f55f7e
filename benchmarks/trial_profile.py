"""Where one proxy trial's time goes: a cProfile of `run_training` as a search trial runs it.

The trial trains on the prepared task (stacked tensors, built once per search) with the ``moderate``
preset, one torch thread, no final evaluation (a trial never reads the test split). The report gives
the shares of the fit's wall time in the parts a search can act on — batch building, the policy's ops,
the model's forward and backward passes, the optimiser step, validation — and the rest (Lightning's
loop and hooks), then the top functions by cumulative time.

    .venv/bin/python benchmarks/trial_profile.py
    .venv/bin/python benchmarks/trial_profile.py --policy none --max-epochs 10
"""

from __future__ import annotations

import argparse
import cProfile
import io
import logging
import os
import pstats
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (label, file suffix, function name): cumulative time of these frames, as a share of the fit
PARTS = (
    ("batch building (index_select of stacked tensors)", "trainers/prepared.py", "batch"),
    ("policy ops (all stages)", "autoaug/policy/policy.py", "__call__"),
    ("training forward (token stage to loss)", "trainers/lightning_module.py", "training_step"),
    ("backward", "torch/_tensor.py", "backward"),
    ("validation step", "trainers/lightning_module.py", "validation_step"),
)
# Lightning runs training_step and backward inside optimizer.step(closure): the optimiser's own share
# is that frame minus the two it wraps.
OPTIMISER_FRAME = ("torch/optim/optimizer.py", "wrapper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="moderate")
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    import torch

    from autoaug.trainers.train import DEFAULT_MAX_EPOCHS, prepare_task, run_training

    torch.set_num_threads(1)
    prepared = prepare_task("shapes-vqa", None, 0)
    epochs = args.max_epochs or DEFAULT_MAX_EPOCHS
    run_training(prepared=prepared, policy=args.policy, seed=0, max_epochs=1, evaluate=False)  # warm imports
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    run_training(prepared=prepared, policy=args.policy, seed=0, max_epochs=epochs, evaluate=False)
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    print(f"# One proxy trial ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1 torch thread, "
          f"load average {os.getloadavg()[0]:.1f})\n")
    print(f"`{' '.join(sys.argv)}` — policy {args.policy}, {epochs} epochs, "
          f"{len(prepared.splits['train'])} training / {len(prepared.splits['val'])} validation examples; "
          f"{wall:.2f} s under the profiler\n")
    print("| part | share of the run |")
    print("|---|---|")
    def cumulative(suffix: str, name: str) -> float:
        return sum(row[3] for (file, _, function), row in stats.stats.items()
                   if file.endswith(suffix) and function == name)

    shares = {label: cumulative(suffix, name) for label, suffix, name in PARTS}
    shares["optimiser update (AdamW)"] = cumulative(*OPTIMISER_FRAME) - shares["training forward (token stage to loss)"] \
        - shares["backward"]
    # token/embedding-stage ops run inside training_step, pixel-stage ones in the policy callback
    shares["everything else (Lightning loop and hooks, pixel-stage policy, logging)"] = wall - sum(
        value for label, value in shares.items() if label != "policy ops (all stages)")
    for label, seconds in shares.items():
        print(f"| {label} | {100 * seconds / wall:.1f} % |")
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("cumulative").print_stats(args.top)
    print("\n```\n" + "\n".join(line for line in buffer.getvalue().splitlines() if line.strip()) + "\n```")


if __name__ == "__main__":
    main()

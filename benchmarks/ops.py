"""Time every registered op on a realistic batch against the memory-bandwidth floor.

    .venv/bin/python benchmarks/ops.py [--device cpu|cuda] [--threads N] [--repeats N]
                                       [--magnitude M] [--budget-s S] [--ops a,b] [--json PATH]

The batch is what a ViT-B/16 VLM step sees: B=64, 196 vision tokens of width 768 (token stage: patch
pixels 16x16x3 = 768; embedding stage: embeddings of width 768 plus ``text_embeddings``), 64 text
tokens, saliency present; pixel ops get images ``[64, 3, 224, 224]``; frame ops get 4 frames of a
7x7 grid (still 196 tokens). Batches come from `autoaug.synthetic.example_batch`.

For each op the benchmark times ``sample_params`` + ``apply`` together (what a training step pays)
and ``apply`` alone (on params drawn once), and compares the first with the floor: a plain
``clone()`` of exactly the input tensors the op touches. "Touched" is found by running the op once
and keeping the output fields that are neither the input's object nor equal to it (a field the op
creates is floored by a clone of its output). Extra comparisons: token_mixup / token_cutmix against
timm-style per-sample (elem) mixing and a per-sample Python loop (helpers in
`autoaug.ops.mixing`), mergemix against one self-attention layer over the same tokens.

Timing: warm-up calls, then the median of the repeats, the op and its baselines measured in the
same loop (rotating their order) so machine noise hits all of them alike; CUDA is synchronised
before every clock read. Repeats shrink for slow ops so the whole run fits ``--budget-s``; the
output says which ops ran fewer. On CPU a fresh 38 MB tensor may be page-faulted in (mmap) or reuse
freed heap memory depending on the allocator's state, so the clone floor of the big fields moves
between runs (seen: 2-13 ms); op and floor share that state because they are interleaved, but rerun
before trusting a PASS/MISS near its bound, and on a quiet machine (a load warning is printed). Exit code 0 on success, 2 on bad options, 1 when an op raised.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from autoaug import ops
from autoaug.batch import MultimodalBatch
from autoaug.synthetic import example_batch

BATCH_SIZE, GRID, WIDTH, TEXT_LEN, IMAGE_SIZE, HEADS = 64, 14, 768, 64, 224, 12
FRAMES, FRAME_GRID = 4, 7  # frame ops: 4 frames x 7x7 patches = the same 196 tokens

ELEMENTWISE_FAMILIES = ("dropout", "masking")  # module names held to the tight target
ELEMENTWISE_OPS = ("embedding_noise",)
ELEMENTWISE_TARGET, GENERAL_TARGET, ATTENTION_TARGET = 3.0, 20.0, 1.0
MIXING_OPS = ("token_mixup", "token_cutmix")
SLOW_CALL_S = 0.1  # a call this slow needs no second warm-up call
TINY_FLOOR_MS = 0.05  # below this the clone floor is per-call overhead, not memory bandwidth


# ---------------------------------------------------------------------------------------- timing
@dataclass
class Measurement:
    """One timed callable and its samples (seconds)."""

    label: str
    fn: Callable[[], object]
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1e3 if self.samples else math.nan


def make_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def time_once(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def warm_up(measurements: list[Measurement], warmup: int, sync) -> float:
    """Run each callable up to ``warmup`` times (once if a call is slow, over `SLOW_CALL_S`); return
    the cost of one interleaved round, estimated from the last warm-up calls."""
    round_cost = 0.0
    for measurement in measurements:
        elapsed = 0.0
        for _ in range(max(warmup, 1)):
            elapsed = time_once(measurement.fn, sync)
            if elapsed > SLOW_CALL_S:
                break
        round_cost += elapsed
    return round_cost


def run_interleaved(measurements: list[Measurement], repeats: int, sync) -> None:
    """``repeats`` rounds; each round times every callable once, starting at a rotating offset."""
    count = len(measurements)
    for round_index in range(repeats):
        for k in range(count):
            measurement = measurements[(round_index + k) % count]
            measurement.samples.append(time_once(measurement.fn, sync))


# ---------------------------------------------------------------------------------------- batches
def batch_options(op: ops.Op) -> dict:
    """example_batch options for an op's stage (the benchmark's realistic shapes)."""
    options = dict(batch_size=BATCH_SIZE, grid=GRID, patch_dim=WIDTH, text_len=TEXT_LEN,
                   with_saliency=True)
    if op.stage == "embedding":
        options["embed_dim"] = WIDTH
    if op.stage == "pixel":
        options["image_size"] = IMAGE_SIZE
    if op.name.startswith("frame_"):
        options.update(grid=FRAME_GRID, num_frames=FRAMES)
    return options


class BatchCache:
    """One batch per distinct shape configuration, built once and shared by the ops that need it."""

    def __init__(self, device: torch.device, seed: int, with_alignment: bool) -> None:
        self.device, self.seed, self.with_alignment = device, seed, with_alignment
        self._batches: dict[tuple, MultimodalBatch] = {}

    def for_op(self, op: ops.Op) -> tuple[MultimodalBatch, dict]:
        return self.get(batch_options(op))

    def get(self, options: dict) -> tuple[MultimodalBatch, dict]:
        options = dict(options, with_alignment=self.with_alignment, seed=self.seed)
        key = tuple(sorted(options.items()))
        if key not in self._batches:
            self._batches[key] = example_batch(device=self.device, **options)
        return self._batches[key], options


def touched_fields(before: MultimodalBatch, after: MultimodalBatch) -> tuple[dict[str, Tensor], list[str]]:
    """Input tensors (by field) the op changed, and the fields it rewrote with equal content.

    A field the op changed is floored by a clone of its input tensor; a field the op created (absent
    in the input) by a clone of the output tensor, the same number of bytes written.
    """
    inputs, outputs = before.tensors(), after.tensors()
    touched: dict[str, Tensor] = {}
    rewritten_equal: list[str] = []
    for name, out in outputs.items():
        source = inputs.get(name)
        if source is out:
            continue
        same = (source is not None and source.shape == out.shape and source.dtype == out.dtype
                and source.device == out.device and torch.equal(source, out))
        if same:
            rewritten_equal.append(name)
        else:
            touched[name] = source if source is not None else out
    return touched, rewritten_equal


def describe_tensor(tensor: Tensor) -> str:
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{list(tensor.shape)} {dtype}"


# ---------------------------------------------------------------------------------------- baselines
def mixing_baselines(op: ops.Op, batch: MultimodalBatch,
                     params: dict) -> tuple[dict[str, Callable], list[str]]:
    """timm-style elementwise mixing and the per-sample Python loop for a mixing op, where offered.

    Both helpers in `autoaug.ops.mixing` take ``(tokens, labels, lam, partner)`` and blend
    ``λ x_i + (1 − λ) x_j`` per sample. token_mixup: they mix the same fields the op mixes (vision
    and text embeddings) with the op's own λ and partners. token_cutmix: no cutmix helper is offered,
    so the same helpers blend the vision tokens with λ = the share the op's box keeps: the per-sample
    cost of touching those tokens. Inactive samples get λ = 1 (timm skips them). A helper that is
    absent or has another signature reports "n/a".
    """
    from autoaug.ops import mixing

    active = params["active"]
    partner = params["partner"]
    if op.name == "token_cutmix":
        box = params["box"]
        lam = 1.0 - (box[:, 2] * box[:, 3]).to(torch.float32) / batch.num_vision_tokens
        fields = [batch.vision]
        context = "baselines blend the vision tokens with λ = the kept share (no cutmix helper)"
    else:
        lam = params["lam"].to(torch.float32)
        fields = [t for t in (batch.vision, batch.text_embeddings) if t is not None]
        context = "baselines mix vision and text embeddings with the op's λ and partners"
    lam = torch.where(active, lam, torch.ones_like(lam))
    expected = ["tokens", "labels", "lam", "partner"]

    baselines: dict[str, Callable] = {}
    notes: list[str] = [context]
    for label, attribute in (("timm-style elem mixing", "mix_elementwise_timm_style"),
                             ("per-sample Python loop", "mix_python_loop")):
        helper = getattr(mixing, attribute, None)
        if helper is None:
            notes.append(f"{label}: n/a (autoaug.ops.mixing.{attribute} is not defined)")
            continue
        got = list(inspect.signature(helper).parameters)
        if got[:4] != expected:
            notes.append(f"{label}: n/a ({attribute}{tuple(got)} does not take {tuple(expected)})")
            continue

        def call(helper=helper):
            return [helper(tokens, batch.labels, lam, partner) for tokens in fields]

        baselines[label] = call
    return baselines, notes


def attention_baseline(batch: MultimodalBatch, device: torch.device) -> tuple[str, Callable]:
    """One self-attention layer forward over the op's vision tokens (no grad, fused fast path)."""
    layer = torch.nn.MultiheadAttention(WIDTH, HEADS, batch_first=True).to(device).eval()
    tokens = batch.vision
    label = (f"nn.MultiheadAttention({WIDTH}, {HEADS}, batch_first=True) forward on "
             f"{list(tokens.shape)}")

    def forward():
        with torch.no_grad():
            return layer(tokens, tokens, tokens, need_weights=False)

    return label, forward


# ---------------------------------------------------------------------------------------- one op
def fixed_cost_ms(cache: BatchCache, sync, rounds: int = 50) -> float:
    """Median ms of ``batch.replace(augmented=...)``: the validated copy every op's apply ends with."""
    batch, _ = cache.get(dict(batch_size=BATCH_SIZE, grid=GRID, patch_dim=WIDTH, text_len=TEXT_LEN,
                              with_saliency=True))
    active = torch.ones_like(batch.augmented)
    measurement = Measurement("replace", lambda: batch.replace(augmented=batch.augmented | active))
    warm_up([measurement], 3, sync)
    run_interleaved([measurement], rounds, sync)
    return measurement.median_ms


def target_for(op: ops.Op, family: str) -> tuple[str, float]:
    """(kind, bound): ``clone`` ratio bound, or ``attention`` ratio bound for mergemix."""
    if family == "mergemix" or op.name == "mergemix":
        return "attention", ATTENTION_TARGET
    if family in ELEMENTWISE_FAMILIES or op.name in ELEMENTWISE_OPS:
        return "clone", ELEMENTWISE_TARGET
    return "clone", GENERAL_TARGET


def benchmark_op(name: str, args, cache: BatchCache, device: torch.device, sync,
                 budget_s: float) -> dict:
    started = time.perf_counter()
    op = ops.get(name)
    family = type(op).__module__.rsplit(".", 1)[-1]
    batch, options = cache.for_op(op)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    row: dict = {"op": name, "stage": op.stage, "modality": op.modality, "family": family,
                 "batch": {k: v for k, v in options.items() if k != "seed"}}

    # One run: which fields the op touches, and params for the apply-alone timing.
    params = op.sample_params(batch, args.magnitude, torch.Generator(device=device).manual_seed(args.seed))
    output = op.apply(batch, params)
    touched, rewritten_equal = touched_fields(batch, output)
    floor_inputs = list(touched.values())
    row["touched"] = {field_name: describe_tensor(t) for field_name, t in touched.items()}
    row["rewritten_equal"] = rewritten_equal
    row["active_fraction"] = float(params["active"].float().mean())
    del output

    measurements = [
        Measurement("sample+apply",
                    lambda: op.apply(batch, op.sample_params(batch, args.magnitude, generator))),
        Measurement("apply", lambda: op.apply(batch, params)),
        Measurement("clone", lambda: [t.clone() for t in floor_inputs]),
    ]
    notes: list[str] = []
    if name in MIXING_OPS:
        try:
            baselines, notes = mixing_baselines(op, batch, params)
        except Exception as error:  # noqa: BLE001 - a baseline that cannot run is reported, not fatal
            baselines, notes = {}, [f"baselines n/a ({type(error).__name__}: {error})"]
        measurements += [Measurement(label, fn) for label, fn in baselines.items()]
    target_kind, bound = target_for(op, family)
    if target_kind == "attention":
        label, fn = attention_baseline(batch, device)
        measurements.append(Measurement("attention", fn))
        row["attention_layer"] = label

    round_cost = warm_up(measurements, args.warmup, sync)
    left_s = budget_s - (time.perf_counter() - started)
    repeats = args.repeats
    if round_cost * repeats > left_s:
        repeats = max(args.min_repeats, min(args.repeats, int(left_s / max(round_cost, 1e-9))))
    run_interleaved(measurements, repeats, sync)
    row["repeats"] = repeats
    row["repeats_reduced"] = repeats < args.repeats

    by_label = {m.label: m for m in measurements}
    row["samples_s"] = {m.label: m.samples for m in measurements}
    row["ms_sample_apply"] = by_label["sample+apply"].median_ms
    row["ms_apply"] = by_label["apply"].median_ms
    row["ms_clone"] = by_label["clone"].median_ms if floor_inputs else math.nan
    row["ratio"] = ratio(row["ms_sample_apply"], row["ms_clone"])
    row["ratio_apply"] = ratio(row["ms_apply"], row["ms_clone"])
    row["floor_is_overhead"] = bool(floor_inputs) and row["ms_clone"] < TINY_FLOOR_MS

    comparisons = {}
    for m in measurements[3:]:
        comparisons[m.label] = {"ms": m.median_ms, "ratio": ratio(row["ms_sample_apply"], m.median_ms)}
    row["comparisons"] = comparisons
    row["comparison_notes"] = notes

    if target_kind == "attention":
        row["target"] = f"<= {bound:g}x attention"
        measured = comparisons["attention"]["ratio"]
    else:
        row["target"] = f"<= {bound:g}x clone"
        measured = row["ratio"]
    row["target_kind"], row["target_bound"] = target_kind, bound
    row["pass"] = None if math.isnan(measured) else bool(measured <= bound)
    return row


def ratio(numerator: float, denominator: float) -> float:
    if not (denominator > 0) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


# ---------------------------------------------------------------------------------------- output
def fmt_ms(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def fmt_ratio(value: float) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:.2f}x" if value < 100 else f"{value:.0f}x"


def print_table(rows: list[dict]) -> None:
    header = ["op", "stage", "family", "ms (sample+apply)", "ms apply", "clone ms", "ratio", "target",
              "PASS/MISS"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        if "error" in row:
            cells = [row["op"], row.get("stage", "?"), row.get("family", "?"), "ERROR", "", "", "", "",
                     "ERROR"]
        else:
            mark = "" if not row["repeats_reduced"] else "*"
            tiny = "†" if row["floor_is_overhead"] else ""
            verdict = "n/a" if row["pass"] is None else ("PASS" if row["pass"] else "MISS")
            cells = [row["op"] + mark, row["stage"], row["family"], fmt_ms(row["ms_sample_apply"]),
                     fmt_ms(row["ms_apply"]), fmt_ms(row["ms_clone"]), fmt_ratio(row["ratio"]) + tiny,
                     row["target"], verdict]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def print_details(rows: list[dict], args) -> None:
    print()
    for row in rows:
        if "error" in row:
            print(f"- {row['op']}: raised {row['error']}")
            continue
        if row["op"] in MIXING_OPS:
            parts = [f"{label} {fmt_ms(c['ms'])} ms -> {fmt_ratio(c['ratio'])}"
                     for label, c in row["comparisons"].items()]
            parts += row["comparison_notes"]
            print(f"- {row['op']} ({fmt_ms(row['ms_sample_apply'])} ms) vs " + "; ".join(parts))
        if row["target_kind"] == "attention":
            c = row["comparisons"]["attention"]
            verdict = "PASS" if row["pass"] else "MISS"
            print(f"- {row['op']} ({fmt_ms(row['ms_sample_apply'])} ms) vs one self-attention layer, "
                  f"{row['attention_layer']}, no grad: {fmt_ms(c['ms'])} ms -> {fmt_ratio(c['ratio'])} "
                  f"(target < {ATTENTION_TARGET:g}x) {verdict}; vs clone {fmt_ratio(row['ratio'])} "
                  f"(no clone target for mergemix)")
    missing_mixing = [name for name in MIXING_OPS if name not in {r["op"] for r in rows}]
    for name in missing_mixing:
        if not args.ops:
            print(f"- {name}: not registered, no mixing comparison")
    print()
    print("Touched fields (what the clone floor copies):")
    for row in rows:
        if "error" in row:
            continue
        fields = ", ".join(f"{k} {v}" for k, v in row["touched"].items()) or "none"
        extra = f"; rewritten with equal content: {', '.join(row['rewritten_equal'])}" \
            if row["rewritten_equal"] else ""
        print(f"- {row['op']}: {fields}{extra}")
    reduced = [f"{r['op']} ({r['repeats']})" for r in rows if r.get("repeats_reduced")]
    print()
    if reduced:
        print(f"* repeats reduced from {args.repeats} to fit --budget-s {args.budget_s:g}: "
              + ", ".join(reduced))
    if any(r.get("floor_is_overhead") for r in rows):
        print(f"† clone floor under {TINY_FLOOR_MS} ms: the op touches only small masks/flags, so the "
              "ratio compares against per-call overhead rather than memory bandwidth")
    judged = [r for r in rows if r.get("pass") is not None]
    misses = [r["op"] for r in judged if not r["pass"]]
    print(f"{len(judged) - len(misses)}/{len(judged)} ops meet their target"
          + (f"; MISS: {', '.join(misses)}" if misses else ""))


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: Optional[list[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own default)")
    parser.add_argument("--magnitude", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds per op (median reported)")
    parser.add_argument("--min-repeats", type=int, default=3,
                        help="never fewer rounds than this, even for slow ops")
    parser.add_argument("--warmup", type=int, default=2,
                        help=f"untimed calls of each callable first (one when a call takes over "
                             f"{SLOW_CALL_S:g} s)")
    parser.add_argument("--budget-s", type=float, default=150.0,
                        help="seconds of timing for all ops together; slow ops get fewer repeats")
    parser.add_argument("--ops", default="", help="comma-separated op names (default: every registered op)")
    parser.add_argument("--alignment", action="store_true",
                        help="give the batches alignment pairs (erasing ops then pay spare_aligned)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="write the raw numbers here")
    args = parser.parse_args(argv)
    if not 0.0 <= args.magnitude <= 1.0:
        parser.error(f"--magnitude must be in [0, 1], got {args.magnitude}")
    if args.repeats < 1 or args.min_repeats < 1 or args.warmup < 0:
        parser.error("--repeats and --min-repeats must be >= 1, --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this torch build")
    args.min_repeats = min(args.min_repeats, args.repeats)
    return args, parser


def main(argv: Optional[list[str]] = None) -> int:
    args, parser = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = make_sync(device)

    registered = ops.names()
    if args.ops:
        names = [n.strip() for n in args.ops.split(",") if n.strip()]
        unknown = [n for n in names if n not in registered]
        if unknown:
            parser.error(f"--ops: unknown op(s) {', '.join(unknown)} (registered: {', '.join(registered)})")
    else:
        names = registered

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# autoaug op benchmark: torch {torch.__version__}, device {device_name}, "
          f"{torch.get_num_threads()} threads, magnitude {args.magnitude:g}")
    print(f"# batch: B={BATCH_SIZE}, Nv={GRID * GRID} x {WIDTH} (token: 16x16x3 patch pixels; "
          f"embedding: embeddings + text_embeddings), Nt={TEXT_LEN}, saliency"
          f"{', alignment' if args.alignment else ''}; pixel ops: images [{BATCH_SIZE}, 3, {IMAGE_SIZE}, "
          f"{IMAGE_SIZE}]; frame ops: {FRAMES} frames x {FRAME_GRID}x{FRAME_GRID}")
    print(f"# median of up to {args.repeats} interleaved rounds (at least {args.min_repeats}) after "
          f"{args.warmup} warm-up calls (1 for calls over {SLOW_CALL_S:g} s), timing budget "
          f"{args.budget_s:g} s; ratio = ms (sample+apply) / clone ms; {len(names)} ops")
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores:
        print(f"# WARNING: load average {load:.1f} on {cores} cores: other processes compete for the "
              "CPU, so absolute times are inflated and noisy (ratios less so: measured interleaved)")

    cache = BatchCache(device, args.seed, args.alignment)
    rows: list[dict] = []
    start = time.perf_counter()
    for index, name in enumerate(names):
        remaining = args.budget_s - (time.perf_counter() - start)
        budget = max(remaining, 0.0) / (len(names) - index)
        print(f"[{index + 1}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        try:
            rows.append(benchmark_op(name, args, cache, device, sync, budget))
        except Exception as error:  # noqa: BLE001 - one broken op must not hide the others' numbers
            cls = ops.op_class(name)
            rows.append({"op": name, "stage": cls.stage, "family": cls.__module__.rsplit(".", 1)[-1],
                         "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()})
    elapsed = time.perf_counter() - start
    replace_ms = fixed_cost_ms(cache, sync)

    print()
    print_table(rows)
    print_details(rows, args)
    print(f"reference: MultimodalBatch.replace (the validated copy every op's apply returns) "
          f"costs {fmt_ms(replace_ms)} ms on this machine")
    print(f"timed in {elapsed:.1f} s")

    if args.json:
        record = {
            "config": {
                "torch": torch.__version__, "device": device_name, "threads": torch.get_num_threads(),
                "magnitude": args.magnitude, "repeats": args.repeats, "min_repeats": args.min_repeats,
                "warmup": args.warmup, "budget_s": args.budget_s, "alignment": args.alignment,
                "seed": args.seed, "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
                "batch_size": BATCH_SIZE, "vision_tokens": GRID * GRID,
                "width": WIDTH, "text_len": TEXT_LEN, "image_size": IMAGE_SIZE,
                "targets": {"elementwise_clone": ELEMENTWISE_TARGET, "clone": GENERAL_TARGET,
                            "mergemix_attention": ATTENTION_TARGET},
            },
            "elapsed_s": elapsed,
            "ms_batch_replace": replace_ms,
            "ops": rows,
        }
        with open(args.json, "w") as handle:
            json.dump(_json_safe(record), handle, indent=1)
        print(f"raw numbers written to {args.json}", file=sys.stderr)
    return 1 if any("error" in row for row in rows) else 0


def _json_safe(value):
    """NaN -> null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())

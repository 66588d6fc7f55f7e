"""The `autoaug` command line (DESIGN §11).

With ``--json`` the last line of stdout is one JSON object; tables and progress go elsewhere.
Exit codes: 0 success, 2 bad input (one clear line on stderr), 1 any other failure.
"""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from autoaug.errors import AutoaugInputError

app = typer.Typer(
    name="autoaug",
    help="Search augmentation policies for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


def stdout_console() -> Console:
    """Tables on stdout; wide enough to stay readable when stdout is a pipe or a file."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def emit_json(result: dict) -> None:
    """Print the result as the last line of stdout."""
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


@app.command("ops")
def list_ops(
    as_json: bool = typer.Option(False, "--json", help="End stdout with the ops as one JSON object."),
    stage: Optional[str] = typer.Option(None, help="Only ops of this stage (pixel, token, embedding)."),
    modality: Optional[str] = typer.Option(None, help="Only ops of this modality (vision, text, cross)."),
) -> None:
    """List every registered op: stage, modality, magnitude range and whether it mixes labels."""
    from autoaug import ops

    for value, allowed, flag in ((stage, ops.STAGES, "--stage"), (modality, ops.MODALITIES, "--modality")):
        if value is not None and value not in allowed:
            raise AutoaugInputError(f"{flag}: {value!r} is not one of {', '.join(allowed)}")
    rows = [row for row in ops.describe()
            if (stage is None or row["stage"] == stage) and (modality is None or row["modality"] == modality)]
    if as_json:
        emit_json({"ops": rows})
        return
    table = Table(title=f"{len(rows)} registered ops")
    for column in ("name", "stage", "modality", "magnitude 0 → 1", "mixes labels", "summary"):
        table.add_column(column, overflow="fold")
    for row in rows:
        low, high = row["magnitude_range"]
        table.add_row(row["name"], row["stage"], row["modality"], f"{row['parameter']}: {low:g} → {high:g}",
                      "yes" if row["mixes_labels"] else "", row["summary"])
    stdout_console().print(table)


@app.command("show")
def show_policy(
    policy_ref: str = typer.Argument(..., metavar="FILE_OR_PRESET", help="A policy file or a preset name."),
    as_json: bool = typer.Option(False, "--json", help="End stdout with the validated policy as JSON."),
) -> None:
    """Print a policy as a table: op, stage, modality, p, magnitude, schedule (drawn), balance."""
    from autoaug.policy import Policy

    policy = Policy.load(policy_ref)
    config = policy.config
    console = stdout_console()
    title = f"policy {config.name or policy.source}: {config.selection}"
    if config.selection == "random_n":
        title += f" (n={config.n} per sample)"
    table = Table(title=title, caption=_policy_caption(config))
    for column in ("#", "op", "stage", "modality", "p", "magnitude", "balance", "schedule", "0 → 1"):
        table.add_column(column, overflow="fold")
    for index, entry in enumerate(config.entries):
        balance = getattr(config.balance, entry.modality)
        table.add_row(str(index), entry.op, entry.stage, entry.modality, f"{entry.p:g}" + (" ×sched" if entry.schedule_p else ""),
                      f"{entry.magnitude:g}", f"×{balance:g}", entry.schedule.describe(), entry.schedule.sparkline())
    console.print(table)
    if as_json:
        emit_json({"policy": policy.to_dict()})


def _policy_caption(config) -> str:
    parts = [f"clean fraction {config.clean_fraction:g}", f"augmented loss weight {config.augmented_loss_weight:g}"]
    if config.magnitude_sampling == "uniform":
        parts.append("magnitude drawn uniformly in [0, magnitude]")
    if config.consistency is not None:
        parts.append(f"consistency KL weight {config.consistency.weight:g} (T={config.consistency.temperature:g})")
    if config.provenance is not None:
        fields = config.provenance.model_dump(exclude_none=True, exclude_defaults=True)
        parts.append("provenance: " + ", ".join(f"{k}={v}" for k, v in fields.items()))
    return "; ".join(parts)


@app.callback()
def _root() -> None:
    """Search augmentation policies for vision-language models."""


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: run the app and map errors onto the exit codes of DESIGN §11.

    Typer's standalone mode already exits 2 on usage errors; input errors raised by our own code
    become one line and exit 2, anything else one line and exit 1 (never a traceback).
    """
    try:
        app(args=argv)
    except AutoaugInputError as error:
        stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as error:
        stderr.print(f"[bold red]failed:[/] {type(error).__name__}: {error}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

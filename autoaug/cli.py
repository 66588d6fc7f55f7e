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
    Console().print(table)


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

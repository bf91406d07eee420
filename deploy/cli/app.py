"""The `cellbank` command: its groups and commands, and `main`, which runs one of them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import typer
from typer._click.exceptions import UsageError  # Typer vendors click; no public name for it
from typer.core import TyperGroup

from deploy import sign_in
from deploy.cli import audit, hla, inventory, login, replay, trace, watch
from deploy.cli.console import Streams
from deploy.cli.errors import CliError

# `cellbank --help` lists the commands in the order an operator meets them.
ORDER = ("login", "logout", "audit", "inventory", "trace", "replay", "watch", "hla")


class CellbankGroup(TyperGroup):
    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    name="cellbank",
    cls=CellbankGroup,
    help="Operator tools for a running CellBank network.",
    no_args_is_help=True,
    add_completion=False,  # the interface is the commands below, nothing else
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
login.register(app)
app.add_typer(audit.app, name="audit", no_args_is_help=True)
inventory.register(app)
trace.register(app)
replay.register(app)
watch.register(app)
app.add_typer(hla.app, name="hla", no_args_is_help=True)


def command_listing(group: TyperGroup, prefix: str = "cellbank") -> list[tuple[str, str]]:
    """(`cellbank audit verify`, its one-line help) for every command, in the order of --help."""
    listing = []
    context = typer.Context(group, info_name=prefix)
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        assert command is not None
        if isinstance(command, TyperGroup):
            listing += command_listing(command, f"{prefix} {name}")
        else:
            listing.append((f"{prefix} {name}", command.get_short_help_str(limit=200)))
    return listing


def cellbank_command() -> TyperGroup:
    """The click command behind `app`, its help ending with every command on one line each."""
    command = typer.main.get_command(app)
    assert isinstance(command, TyperGroup)
    listing = command_listing(command)
    width = max(len(name) for name, _ in listing)
    command.epilog = "all commands:\n\n\b\n" + "\n".join(
        f"  {name:<{width}}  {summary}" for name, summary in listing
    )
    return command


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one command; its exit code. Errors go to err as `cellbank: error: …`; usage errors
    (an unknown command, a missing option) exit 2 naming what is wrong."""
    io = Streams(sys.stdout if out is None else out, sys.stderr if err is None else err)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = cellbank_command().main(args, prog_name="cellbank", standalone_mode=False, obj=io)
    except UsageError as exc:
        exc.show(file=io.err)
        return exc.exit_code
    except typer.Abort:
        io.warn("cellbank: aborted")
        return 1
    except CliError as exc:
        io.warn(f"cellbank: error: {exc}")
        return exc.code
    except sign_in.SignInError as exc:
        io.warn(f"cellbank: error: {exc}")
        return 2
    return code if isinstance(code, int) else 0

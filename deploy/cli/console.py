"""Where a command writes: its answer (out), its warnings and progress (err), Rich on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import TextIO

from google.protobuf.timestamp_pb2 import Timestamp
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

# Off a terminal a table is as wide as its rows: scripts and tests read whole lines.
UNWRAPPED = 10_000


def console_for(stream: TextIO) -> Console:
    """A Rich console on `stream`: colours and the terminal's width on a terminal; on a pipe, a
    file or a test's buffer plain text, never wrapped, the same on every machine."""
    if stream.isatty():
        return Console(file=stream, highlight=False, emoji=False, markup=False)  # data, not markup
    return Console(
        file=stream, force_terminal=False, color_system=None, width=UNWRAPPED,
        highlight=False, emoji=False, markup=False, soft_wrap=True,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Streams:
    """Where a command writes its answer (out) and its warnings (err); tests pass buffers."""

    out: TextIO
    err: TextIO

    def print(self, line: str = "") -> None:
        print(line, file=self.out, flush=True)

    def warn(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    def table(self, titles: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """An aligned table: drawn by Rich on a terminal; elsewhere plain text, the columns two
        spaces apart under a line of dashes, trailing blanks trimmed, as scripts read it."""
        console = console_for(self.out)
        if console.is_terminal:
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold")
            for title in titles:
                table.add_column(title)
            for row in rows:
                table.add_row(*row)
            console.print(table)
            return
        table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
        for title in titles:
            table.add_column(title, no_wrap=True)
        widths = [
            max(cell_len(cell) for cell in (t, *(r[i] for r in rows))) for i, t in enumerate(titles)
        ]
        table.add_row(*("-" * width for width in widths))
        for row in rows:
            table.add_row(*row)
        with console.capture() as captured:
            console.print(table)
        for line in captured.get().splitlines():
            self.print(line.rstrip())

    @contextlib.contextmanager
    def progress(self) -> Iterator[Callable[[str], None]]:
        """A sink for progress lines: on a terminal one live line a newer line of the same task
        replaces (other lines stay above it); elsewhere every line, as it comes, on err."""
        console = console_for(self.err)
        if not console.is_terminal:
            yield self.warn
            return
        shown: list[str] = []
        with Live(console=console, auto_refresh=False, transient=True) as live:

            def show(line: str) -> None:
                if shown and task_of(shown[-1]) != task_of(line):
                    live.console.print(Text(shown[-1]))
                shown[:] = [line]
                live.update(Text(line), refresh=True)

            try:
                yield show
            finally:
                if shown:
                    live.console.print(Text(shown[-1]))


def task_of(line: str) -> str:
    """The task a progress line reports on: its label before the bar (`label [####....] …`)."""
    label, bar, _ = line.partition(" [")
    return label.rstrip() if bar else line


def moment(ts: Timestamp) -> str:
    """A protobuf Timestamp as UTC to the second: the resolution people sign and audit at."""
    return ts.ToDatetime(tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_moment(value: str) -> str:
    """An RFC 3339 string from a JSON payload, in the same form as `moment` (as given if odd)."""
    ts = Timestamp()
    try:
        ts.FromJsonString(value)
    except ValueError:
        return value
    return moment(ts)

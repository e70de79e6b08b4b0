"""Rich progress bars behind the library's Progress protocol."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RichProgress:
    """One bar per unit of work in progress; `None` totals show a pulsing bar.

    A finished unit leaves the live table and is counted on its stage's one summary row
    ("preprocess: 120 done", the stage being the first word of its description): on a
    corpus of thousands of files a row per file made rich re-render a table of thousands
    of rows ten times a second, which took most of the CPU of `merforge run`."""

    def __init__(self, console: Console | None = None, unit: str = ""):
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn() if unit == "items" else TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = None
        self._done: dict[str, tuple[int, int, float]] = {}  # stage -> (summary row's task id, units, steps)

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def start(self, description: str, total: float | None) -> None:
        self._task = self._progress.add_task(description[:48], total=total)

    def advance(self, amount: float) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)

    def finish(self) -> None:
        if self._task is None:
            return
        task = next((t for t in self._progress.tasks if t.id == self._task), None)
        self._task = None
        if task is None:
            return
        self._progress.remove_task(task.id)
        stage = task.description.split(" ", 1)[0] or "work"
        row, count, steps = self._done.get(stage, (None, 0, 0.0))
        if row is None:
            row = self._progress.add_task("", total=1)
        count, steps = count + 1, steps + (task.total if task.total is not None else task.completed)
        self._done[stage] = (row, count, steps)
        self._progress.update(row, description=f"{stage}: {count} done", total=steps or 1, completed=steps or 1)

"""The CLI's progress display stays small however many files a run has."""

import io

from rich.console import Console

from merforge.flows.progress import RichProgress


def test_finished_units_fold_into_one_row_per_stage():
    output = io.StringIO()
    with RichProgress(Console(file=output, force_terminal=True, width=100), unit="items") as progress:
        for number in range(300):
            progress.start(f"sample clip{number:03d}.wav", 2)
            progress.advance(2)
            progress.finish()
            progress.start(f"preprocess clip{number:03d}.wav", 1)
            progress.advance(1)
            progress.finish()
        rows = {task.description: (task.completed, task.total) for task in progress._progress.tasks}
    assert rows == {"sample: 300 done": (600, 600), "preprocess: 300 done": (300, 300)}
    assert "clip299" not in output.getvalue().splitlines()[-1]


def test_a_unit_in_progress_has_its_own_row_until_it_finishes():
    with RichProgress(Console(file=io.StringIO()), unit="items") as progress:
        progress.start("annotate batch 1", 10)
        progress.advance(4)
        assert [(t.description, t.completed) for t in progress._progress.tasks] == [("annotate batch 1", 4)]
        progress.finish()
        progress.finish()  # a second finish is harmless
        assert [t.description for t in progress._progress.tasks] == ["annotate: 1 done"]

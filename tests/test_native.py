"""Compiled builds of the hot modules (merforge/native.py).

- After setup, the judge and the aggregation load from their Cython builds.
- The compiled judge and aggregation give exactly what the same source run as Python gives,
  on the benchmark's synthetic clips (every JudgeScores field, every table array).
- A build is only used while its module's source is unchanged: an edited module runs as
  Python until it is built again, and the new build replaces the old one.
- A source that does not compile is reported, naming the module.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from merforge import native
from merforge.agents import aggregate, judge
from merforge.storage.config import JudgeWeights

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

AGENTS = Path(judge.__file__).resolve().parents[2] if "_native" in judge.__file__ else Path(judge.__file__).parent


def _pure(module: str):
    """agents/<module>.py run as Python, as a module of its own (the compiled one stays loaded)."""
    spec = importlib.util.spec_from_file_location(f"merforge_pure_{module}", AGENTS / f"{module}.py")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = loaded  # dataclasses look their module up there
    spec.loader.exec_module(loaded)
    return loaded


@pytest.mark.skipif(native.pure_python(), reason=f"{native.PURE_ENV} is set")
def test_hot_modules_load_their_compiled_builds():
    assert native.describe() == "judge compiled, aggregate compiled", (
        "scripts/setup.sh builds them: run `.venv/bin/python -m merforge.native` after editing them")
    for module in (judge, aggregate):
        assert Path(module.__file__).parent == native.build_folder(AGENTS, module.__name__.rsplit(".", 1)[1])


def test_compiled_judge_and_aggregation_match_python():
    import aggregate_bench as bench

    pure_judge, pure_aggregate = _pure("judge"), _pure("aggregate")
    evidences, by_clip, _ = bench.generate(80, seed=11)
    weights = JudgeWeights(recognition=0.3, reasoning=0.5, cot=0.2)
    reliabilities = {"visual": 0.8, "acoustic": 0.5, "llm-b": 0.35}
    n_checks = 0
    for ev in evidences:
        ours = judge.judge_clip(by_clip[ev.clip.id], judge.ClipFacts.from_evidence(ev), bench.SPACE, weights,
                                reliabilities)
        theirs = pure_judge.judge_clip(by_clip[ev.clip.id], pure_judge.ClipFacts.from_evidence(ev), bench.SPACE,
                                       weights, reliabilities)
        assert [s.model_dump() for s in ours] == [s.model_dump() for s in theirs]
        n_checks += sum(len(s.checks) for s in ours)
    assert n_checks > 80 * 5 * 4  # real claims were checked, not just zero scores

    ours = aggregate.tabulate(by_clip, None, bench.SPACE)
    theirs = pure_aggregate.tabulate(by_clip, None, bench.SPACE)
    for name in ("matrix", "state", "votes", "soft", "s_final", "modality", "injection", "intensity"):
        assert np.array_equal(getattr(ours, name), getattr(theirs, name), equal_nan=True), name
    table = aggregate.tabulate(by_clip, None, bench.SPACE)
    table.s_final = np.where(np.isnan(table.s_final), 0.6, table.s_final)
    ds = aggregate.DawidSkene().fit(table.matrix, len(table.labels))
    ds_pure = pure_aggregate.DawidSkene().fit(table.matrix, len(table.labels))
    assert np.array_equal(ds.accuracies_, ds_pure.accuracies_, equal_nan=True)
    assert aggregate.consensus_table(table, "weighted").to_records() == \
        pure_aggregate.consensus_table(table, "weighted").to_records()


def _module_file(root: Path) -> str:
    """Where a fresh interpreter imports hotpkg.hot from."""
    code = "import hotpkg.hot as m; print(m.__file__); print(m.twice(21))"
    env = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True, env=env)
    where, value = out.stdout.split()
    assert value == "42"
    return where


def test_an_edited_source_runs_as_python_until_built_again(tmp_path):
    package = tmp_path / "hotpkg"
    package.mkdir()
    (package / "__init__.py").write_text("from merforge.native import use_compiled\n"
                                         "use_compiled(__name__, __path__, ('hot',))\n")
    source = package / "hot.py"
    source.write_text("def twice(x):\n    return x * 2\n")
    assert _module_file(tmp_path) == str(source)  # no build yet

    first, made = native.build_module(package, "hotpkg", "hot")
    assert made and first.parent == package / native.NATIVE_DIR
    assert _module_file(tmp_path).startswith(str(first))
    assert native.build_module(package, "hotpkg", "hot") == (first, False)  # up to date: nothing to do

    source.write_text("def twice(x):\n    return x + x\n")  # edited: the old build no longer applies
    assert _module_file(tmp_path) == str(source)
    second, made = native.build_module(package, "hotpkg", "hot")
    assert made and second != first and not first.exists()
    assert _module_file(tmp_path).startswith(str(second))

    env_code = "import os; os.environ['MERFORGE_PURE_PYTHON'] = '1'; import hotpkg.hot as m; print(m.__file__)"
    out = subprocess.run([sys.executable, "-c", env_code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(source)


def test_a_source_that_does_not_compile_is_reported(tmp_path):
    package = tmp_path / "badpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hot.py").write_text("def broken(:\n    pass\n")
    with pytest.raises(RuntimeError, match="building badpkg.hot failed"):
        native.build_module(package, "badpkg", "hot")
    assert not list((package / native.NATIVE_DIR).glob("hot-*"))  # no half-made build is left to load

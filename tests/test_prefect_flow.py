"""The Prefect flow gives the same clips as calling the library directly."""

import pytest

from merforge.preprocess.ingest import ingest
from merforge.preprocess.sampling import sample_sources
from merforge.storage.workspace import Workspace

pytestmark = pytest.mark.prefect


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_sample_flow_matches_library(prefect_harness, tmp_path, media_dir):
    from merforge.flows.sample_flow import sample_flow

    via_library = Workspace.init(tmp_path / "lib")
    ingest(via_library, [media_dir])
    sample_sources(via_library)

    via_prefect = Workspace.init(tmp_path / "flow")
    ingest(via_prefect, [media_dir])
    summary = sample_flow(str(via_prefect.root))
    assert summary["done"] == 3 and summary["failed"] == 0

    def comparable(ws):
        return [(c.id, c.start, c.end, c.origin, [k.time for k in c.keyframes]) for c in ws.store.clips()]

    assert comparable(via_prefect) == comparable(via_library)
    assert sample_flow(str(via_prefect.root))["skipped"] == 3


def test_preprocess_flow_matches_library(prefect_harness, tmp_path, data):
    from merforge.flows.preprocess_flow import preprocess_flow
    from merforge.preprocess.features import preprocess_sources

    results = {}
    for name in ("lib", "flow"):
        ws = Workspace.init(tmp_path / name)
        ingest(ws, [data / "whisper" / "jfk.flac"])
        sample_sources(ws)
        if name == "lib":
            preprocess_sources(ws)
        else:
            summary = preprocess_flow(str(ws.root))
            assert summary["done"] == ws.store.count_clips() and summary["failed"] == 0
        results[name] = [(c.id, [w.text for w in ws.store.get_features(c.id).transcript.words])
                         for c in ws.store.clips()]
    assert results["flow"] == results["lib"]

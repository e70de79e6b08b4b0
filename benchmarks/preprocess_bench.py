"""Preprocessing benchmark on the bundled samples (samples/manifest.csv), 2-core CPU.

Times, in one run:
  sampling    the one decode pass, now also running face detection, landmarks and AU
              estimates at 5 fps (the face share is measured by sampling again with
              faces off)
  preprocess  ASR (Whisper base by default: per-clip language, English translation of
              non-English clips), diarization, prosody, eGeMAPS, alignment, Parquet
and prints each part as a multiple of real time and where the time goes, peak RSS of
the whole run for the samples and for the samples looped to ~10x their length (memory
must not grow with media length), and as the LAST line
`preprocess_realtime_factor=<media seconds / wall seconds of face analysis + preprocess>`.

Usage: .venv/bin/python benchmarks/preprocess_bench.py [--skip-memory] [--asr-model whisper-tiny.en]
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "manifest.csv"
WORK = ROOT / "benchmarks" / "_work"


def run_pipeline(inputs: list[Path], workdir: Path, faces: bool = True, asr_model: str = "") -> dict:
    from merforge.preprocess.features import preprocess_sources
    from merforge.preprocess.ingest import ingest
    from merforge.preprocess.sampling import sample_sources
    from merforge.storage.config import parse_config
    from merforge.storage.workspace import Workspace

    shutil.rmtree(workdir, ignore_errors=True)
    workspace = Workspace.init(workdir)
    settings: dict = {"asr": {"model": asr_model}} if asr_model else {}
    if not faces:
        settings["face"] = {"enabled": False}
    if settings:
        workspace.config = parse_config(settings)
    ingest(workspace, inputs)
    media = sum(s.media.duration for s in workspace.store.sources() if s.media)
    started = time.perf_counter()
    sampled = sample_sources(workspace)
    sample_s = time.perf_counter() - started
    assert sampled.count("failed") == 0, [o.reason for o in sampled.outcomes]
    result = {"media_s": media, "sample_s": sample_s}
    if faces:
        started = time.perf_counter()
        report = preprocess_sources(workspace)
        result["preprocess_s"] = time.perf_counter() - started
        result["timings"] = report.timings
        result["clips"] = report.count("done")
        assert report.count("failed") == 0, [o.reason for o in report.outcomes]
    workspace.close()
    return result


def build_long_inputs(target_dir: Path, repeats: int) -> list[Path]:
    """Each sample looped `repeats` times (stream copy), for the memory check."""
    import imageio_ffmpeg

    target_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    for source in sorted((ROOT / "samples").glob("*")):
        if source.suffix.lower() not in {".mp4", ".flac"}:
            continue
        target = target_dir / f"long_{source.stem}{source.suffix}"
        if not target.exists():
            listing = target.with_suffix(".txt")
            listing.write_text("".join(f"file '{source.resolve()}'\n" for _ in range(repeats)))
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
                            "-i", str(listing), "-c", "copy", str(target)], check=True)
        outputs.append(target)
    return outputs


def peak_rss(inputs: list[Path], workdir: Path) -> float:
    code = (
        "import resource, sys\nfrom pathlib import Path\nsys.path.insert(0, %r)\n"
        "from preprocess_bench import run_pipeline\n"
        "run_pipeline([Path(p) for p in %r], Path(%r))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    ) % (str(Path(__file__).parent), [str(p) for p in inputs], str(workdir))
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--asr-model", default="", help="asr.model to run (default: the configured default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # load models once, as a long-running worker would
        run_pipeline([SAMPLES], tmp / "warm", asr_model=args.asr_model)
        with_faces = run_pipeline([SAMPLES], tmp / "faces", asr_model=args.asr_model)
        without_faces = run_pipeline([SAMPLES], tmp / "nofaces", faces=False, asr_model=args.asr_model)
        media = with_faces["media_s"]
        face_s = max(0.0, with_faces["sample_s"] - without_faces["sample_s"])
        pre_s = with_faces["preprocess_s"]
        print(f"bundled samples: {media:.1f} s of media, {with_faces['clips']} clips")
        print(f"sampling pass with faces   {with_faces['sample_s']:6.2f} s  ({media / with_faces['sample_s']:5.1f}x real time)")
        print(f"  of which face analysis   {face_s:6.2f} s  ({media / max(face_s, 1e-9):5.1f}x real time)")
        print(f"preprocess stage           {pre_s:6.2f} s  ({media / pre_s:5.1f}x real time)")
        for part, seconds in sorted(with_faces["timings"].items(), key=lambda kv: -kv[1]):
            print(f"  {part:24s} {seconds:6.2f} s  ({media / max(seconds, 1e-9):6.1f}x real time)")
        total = face_s + pre_s
        print(f"faces + preprocess         {total:6.2f} s  ({media / total:5.1f}x real time)")
        if not args.skip_memory:
            short = peak_rss([SAMPLES], tmp / "rss_short")
            long_inputs = build_long_inputs(WORK / "long_samples", 10)
            long_rss = peak_rss(long_inputs, tmp / "rss_long")
            print(f"peak RSS, samples ({media:.0f} s): {short:.0f} MiB; looped x10: {long_rss:.0f} MiB "
                  f"(x{long_rss / short:.2f})")
        print(json.dumps({"media_s": round(media, 2), "face_s": round(face_s, 3), "preprocess_s": round(pre_s, 3),
                          "timings": {k: round(v, 3) for k, v in with_faces["timings"].items()}}))
        print(f"preprocess_realtime_factor={media / total:.2f}")


if __name__ == "__main__":
    main()

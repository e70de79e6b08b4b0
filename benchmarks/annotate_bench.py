"""Annotation fan-out benchmark: 3 LLM endpoints x 200 clips against a local fake server.

The fake OpenAI-compatible server (tests/fake_openai.py, in a thread of this process)
answers every request after 300 ms. Two runs, each with a fresh cache (no cache hits):

  full     every endpoint on every clip (annotate_clips, cascade off): 600 requests
  cascade  the endpoints get cost_rank 1, 2, 3; the answers are scripted so that the
           cheapest endpoint is confident on even clips (the others are skipped), the
           second agrees confidently on clips 1 mod 4 (the third is skipped) and disagrees
           on clips 3 mod 4 (all three run): 200 + 100 + 50 = 350 requests

"Concurrency 16" is read literally as 16 requests in flight overall:
AnnotateConfig.concurrency = 16 clips, and the three agents share one request gate of
16 (OpenAIAgent(request_gate=...)); each endpoint's own max_concurrency is 16 and its
requests_per_minute / tokens_per_minute are set far above what the run needs, so only
the shared gate binds. (16 clips x 3 agents could otherwise put 48 requests in flight,
which would flatter the ratio three-fold.) The ideal wall time of the full run is then
calls x latency / 16 = 600 x 0.3 s / 16 = 11.25 s, and the LAST line is

    fanout_vs_ideal_ratio = wall time of the full run / ideal

Key frames are off (vision = false): the benchmark measures the orchestration (limits,
retries bookkeeping, cache, parsing), not base64 transfer of images over loopback.
Token usage is fixed per reply (1500 in, 200 out), so costs are exact.

Usage: .venv/bin/python benchmarks/annotate_bench.py [--clips 200] [--latency 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai import FakeOpenAI, Reply, answer_json  # noqa: E402

from merforge.agents.evidence import ClipEvidence  # noqa: E402
from merforge.agents.fanout import annotate_clips  # noqa: E402
from merforge.agents.labels import get_space  # noqa: E402
from merforge.agents.openai_agent import OpenAIAgent  # noqa: E402
from merforge.storage.config import AnnotateConfig, EndpointConfig  # noqa: E402
from merforge.storage.records import (  # noqa: E402
    AnnotationStatus,
    Clip,
    ClipOrigin,
    FaceSummary,
    ProsodyStats,
    Provenance,
    Transcript,
    Word,
)

CONCURRENCY = 16
TOKENS_IN, TOKENS_OUT = 1500, 200
KEY_ENV = "MERFORGE_BENCH_KEY"
# (name, model, cost_rank, USD per million tokens in, out)
ENDPOINTS = [("cheap", "bench-mini", 1, 0.15, 0.60), ("mid", "bench-mid", 2, 1.00, 4.00),
             ("big", "bench-large", 3, 2.50, 10.00)]


def clip_evidence(index: int) -> ClipEvidence:
    start = 5.0 * index
    text = f"clip-{index:04d} I told you twice already and you still did not listen to me"
    words = tuple(Word(start=start + 0.3 * i, end=start + 0.3 * i + 0.25, text=w, probability=0.9, speaker="S1")
                  for i, w in enumerate(text.split()))
    clip = Clip(id=f"bench-{index:04d}", source_id="bench-source", start=start, end=start + 4.5,
                origin=ClipOrigin.SPEECH, provenance=Provenance(backend="bench"))
    return ClipEvidence(clip=clip, source_path="bench.mp4",
                        transcript=Transcript(language="en", language_probability=1.0, text=text, words=words),
                        speaker_turns=(), prosody=ProsodyStats(f0_mean=190.0 + index % 40, intensity_mean=66.0),
                        faces=FaceSummary(frames_analysed=20, presence=1.0, tracks=1, mean_aus={"AU04": 0.5}),
                        has_video=True, has_audio=True)


def scripted_answer(body: dict) -> Reply:
    """Answers by endpoint (the model name) and clip number (in the transcript)."""
    user = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user)
    index = int(re.search(r"clip-(\d{4})", text).group(1))
    model = body["model"]
    if model == "bench-mini":
        label, p = ("anger", 0.9) if index % 2 == 0 else ("anger", 0.4)
    elif model == "bench-mid":
        label, p = ("sadness", 0.8) if index % 4 == 3 else ("anger", 0.8)
    else:
        label, p = "anger", 0.9
    return Reply(content=answer_json(label, probability=p), prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)


async def run(server: FakeOpenAI, evidences: list[ClipEvidence], cascade: bool, cache_dir: Path) -> dict:
    gate = asyncio.Semaphore(CONCURRENCY)
    agents = [OpenAIAgent(EndpointConfig(name=name, base_url=server.base_url, model=model, api_key_env=KEY_ENV,
                                         response_format="json_schema", vision=False, cost_rank=rank,
                                         max_concurrency=CONCURRENCY, requests_per_minute=1_000_000,
                                         tokens_per_minute=1_000_000_000, price_in_per_million=p_in,
                                         price_out_per_million=p_out, timeout=30.0),
                          cache_dir / name, request_gate=gate)
              for name, model, rank, p_in, p_out in ENDPOINTS]
    config = AnnotateConfig(concurrency=CONCURRENCY, cascade=cascade, agents=tuple(a.id for a in agents))
    server.reset()
    started = time.perf_counter()
    results = await annotate_clips(evidences, agents, get_space("ekman7"), config)
    wall = time.perf_counter() - started
    for agent in agents:
        await agent.aclose()
    annotations = [a for r in results for a in r.annotations]
    return {"wall": wall, "calls": len(server.requests), "annotations": annotations,
            "statuses": Counter(a.status.value for a in annotations), "max_in_flight": server.max_in_flight,
            "tokens": sum(a.tokens_in + a.tokens_out for a in annotations),
            "cost": sum(a.cost_usd for a in annotations)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the fake server takes per answer")
    args = parser.parse_args()
    os.environ[KEY_ENV] = "bench-not-a-real-key"
    evidences = [clip_evidence(i) for i in range(args.clips)]
    print(f"settings: {args.clips} clips x {len(ENDPOINTS)} endpoints, server latency {args.latency * 1000:.0f} ms, "
          f"AnnotateConfig.concurrency={CONCURRENCY} clips, shared request gate {CONCURRENCY} in flight, "
          f"endpoint max_concurrency={CONCURRENCY}, rpm 1e6 / tpm 1e9 (not binding), vision off, fresh caches")
    with FakeOpenAI(responder=scripted_answer, latency=args.latency) as server, \
            tempfile.TemporaryDirectory(prefix="merforge-annotate-bench-") as tmp:
        full = asyncio.run(run(server, evidences, cascade=False, cache_dir=Path(tmp) / "full"))
        cascade = asyncio.run(run(server, evidences, cascade=True, cache_dir=Path(tmp) / "cascade"))
    for name, result in (("full fan-out", full), ("cascade", cascade)):
        bad = sum(n for status, n in result["statuses"].items() if status != AnnotationStatus.OK)
        print(f"{name}: calls={result['calls']} wall={result['wall']:.2f} s max_in_flight={result['max_in_flight']} "
              f"calls/clip={result['calls'] / args.clips:.2f} tokens/clip={result['tokens'] / args.clips:.0f} "
              f"cost/clip=${result['cost'] / args.clips:.6f} total_cost=${result['cost']:.4f} "
              f"statuses={dict(result['statuses'])}" + (f" NOT OK={bad}" if bad else ""))
    saved = full["calls"] - cascade["calls"]
    print(f"cascade saved {saved} calls ({saved / full['calls']:.1%}) and "
          f"${full['cost'] - cascade['cost']:.4f} ({1 - cascade['cost'] / full['cost']:.1%} of the cost)")
    ideal = full["calls"] * args.latency / CONCURRENCY
    print(f"ideal full fan-out wall time: {full['calls']} calls x {args.latency} s / {CONCURRENCY} = {ideal:.2f} s")
    print(f"fanout_vs_ideal_ratio={full['wall'] / ideal:.3f}")


if __name__ == "__main__":
    main()

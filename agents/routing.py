"""Routing: auto-accept, review or audit each clip, with the reasons in plain words.

A clip goes to **review** when any of these holds (thresholds from `RouteConfig`):

- every agent abstained ("no agent had evidence"; with `no_evidence = "mark"` the clip is
  routed NO_EVIDENCE instead: no label, not queued), or no valid answer at all ("no valid
  answers");
- its consensus confidence is below `min_confidence` ("confidence 0.42 < 0.60"); with a
  workspace calibration (`merforge calibrate`), below the calibrated threshold instead: the
  lowest confidence at which the labelled clips accepted reached `target_precision`
  ("confidence 0.71 < 0.83, the calibrated threshold for precision 0.95"; no threshold
  reaches it: "no calibrated threshold reaches precision 0.95");
- fewer than `min_agreeing_agents` informative agents back the label, and none of those
  that do has a calibrated precision >= `target_precision` at its own confidence ("only 1
  informative agent backs surprise (2 needed)"): one agent, however sure, is not
  agreement;
- the mean S_final of the answers that agree with the chosen label is below `min_s_final`
  ("mean S_final 0.31 < 0.50"); clips whose agreeing answers the judge did not score are
  not held back by this rule;
- the modalities conflict and `review_conflicts` is on (the aggregation's reason,
  "modalities conflict: visual says happiness (0.72), audio says anger (0.65)");
- an answer flagged instruction-like text in the transcript and `review_injections` is on
  ("instruction-like text in the transcript" plus the flag's reason);
- the share of invalid / refused / error answers exceeds `max_invalid_share`
  ("2 of 5 answers invalid").

Every other clip is **auto-accepted**, except a random `audit_share` of them that goes to
review as an **audit** ("audit: random 5% of auto-accepted clips"), so the precision of
auto-acceptance is measured. The draw is a hash of (seed, clip id), not a random stream:
re-running a batch, or routing clips in another order or in other batches, audits the
same clips.

Priority (review order, higher first): uncertainty sampling by margin (Scheffer, Decomain
and Wrobel, "Active hidden Markov models for information extraction", IDA 2001): 1 - (p1 -
p2), the gap between the two most probable labels, doubled for a modality conflict. A
50/50 split between two labels scores 1, a unanimous clip 0, a split conflict 2. Every clip
gets a priority (auto-accepted ones too, so a changed threshold can re-rank them).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from typing import TYPE_CHECKING

from merforge.agents.aggregate import ConsensusTable
from merforge.perf import gc_paused
from merforge.storage.config import RouteConfig
from merforge.storage.records import Annotation, AnnotationStatus, Consensus, JudgeScores, Route

if TYPE_CHECKING:
    from merforge.agents.calibration import WorkspaceCalibration

ROUTES = (Route.AUTO_ACCEPT, Route.REVIEW, Route.AUDIT, Route.NO_EVIDENCE)
AUTO_ACCEPT, REVIEW, AUDIT, NO_EVIDENCE = 0, 1, 2, 3
INJECTION_REASON = "instruction-like text in the transcript"
NO_EVIDENCE_REASON = "no agent had evidence"


def audit_draw(clip_ids: Sequence[str], seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per clip, fixed by (seed, clip id)."""
    out = np.empty(len(clip_ids))
    prefix = f"{seed}:".encode()
    for i, clip in enumerate(clip_ids):
        digest = hashlib.blake2b(prefix + clip.encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def review_priority(margin: np.ndarray, conflict: np.ndarray) -> np.ndarray:
    """(1 - margin) * (1 + conflict): most informative first."""
    return (1.0 - np.asarray(margin, dtype=float)) * (1.0 + np.asarray(conflict, dtype=float))


def _route_arrays(clip_ids: Sequence[str], has_label: np.ndarray, confidence: np.ndarray,
                  s_final_agreeing: np.ndarray, conflict: np.ndarray, conflict_reason: Sequence[str],
                  injection: np.ndarray, injection_reason: Sequence[str], n_invalid: np.ndarray,
                  n_answers: np.ndarray, config: RouteConfig, n_abstained: np.ndarray | None = None,
                  n_agreeing: np.ndarray | None = None, best_agent_precision: np.ndarray | None = None,
                  calibrated_threshold: float | None = None) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Route codes and reasons; the one rule set behind `route` and `route_many`.

    `n_abstained`, `n_agreeing`: per clip; None skips those rules. `best_agent_precision`:
    the highest calibrated precision among the agreeing answers (NaN: none calibrated).
    `calibrated_threshold`: the consensus calibration's threshold (inf: unreachable; None:
    no calibration, so `min_confidence` applies)."""
    n = len(clip_ids)
    no_label = ~has_label
    n_abstained = np.zeros(n, dtype=int) if n_abstained is None else np.asarray(n_abstained)
    no_evidence = no_label & (n_answers > 0) & (n_abstained == n_answers)
    threshold = config.min_confidence if calibrated_threshold is None else calibrated_threshold
    low_confidence = has_label & (np.asarray(confidence, float) < threshold - 1e-12)
    if n_agreeing is None:
        too_few = np.zeros(n, dtype=bool)
    else:
        best = np.full(n, np.nan) if best_agent_precision is None else np.asarray(best_agent_precision, float)
        vouched = ~np.isnan(best) & (best >= config.target_precision - 1e-12)
        too_few = has_label & (np.asarray(n_agreeing) < config.min_agreeing_agents) & ~vouched
    low_s_final = has_label & ~np.isnan(s_final_agreeing) & (s_final_agreeing < config.min_s_final)
    conflicted = conflict & config.review_conflicts
    injected = injection & config.review_injections
    invalid_share = np.divide(n_invalid, n_answers, out=np.zeros(n), where=n_answers > 0)
    too_invalid = (n_invalid > 0) & (invalid_share > config.max_invalid_share)
    review = no_label | low_confidence | low_s_final | conflicted | injected | too_invalid | too_few
    routes = np.where(review, REVIEW, AUTO_ACCEPT).astype(np.int8)
    if config.no_evidence == "mark":
        routes[no_evidence & ~injected] = NO_EVIDENCE
    accepted = np.flatnonzero(~review)
    if config.audit_share > 0 and accepted.size:
        draw = audit_draw([clip_ids[i] for i in accepted], config.seed)
        routes[accepted[draw < config.audit_share]] = AUDIT
    audit_reason = (f"audit: random {config.audit_share * 100:g}% of auto-accepted clips",)
    reasons: list[tuple[str, ...]] = [()] * n
    for i in np.flatnonzero(routes == AUDIT).tolist():
        reasons[i] = audit_reason
    # per clip under review, in plain Python (numpy scalars one by one are slow): the same values
    rows = np.flatnonzero(review)
    confidence_text = f"{config.min_confidence:.2f}"
    s_final_text = f"{config.min_s_final:.2f}"
    with gc_paused():  # many small acyclic tuples: keep the collector from walking what the caller holds
        _review_reasons(reasons, rows, no_label, low_confidence, low_s_final, confidence, s_final_agreeing,
                        conflicted, conflict_reason, injected, injection_reason, too_invalid, n_invalid, n_answers,
                        confidence_text, s_final_text)
        for i in rows.tolist():  # the rules of issue 13 (abstention, agreement, calibration): few clips, plain words
            why = list(reasons[i])
            if no_evidence[i]:
                why = [NO_EVIDENCE_REASON if w == "no valid answers" else w for w in why]
            if low_confidence[i] and calibrated_threshold is not None:
                text = (f"confidence {confidence[i]:.2f} < {calibrated_threshold:.2f}, the calibrated threshold for "
                        f"precision {config.target_precision:.2f}" if math.isfinite(calibrated_threshold) else
                        f"no calibrated threshold reaches precision {config.target_precision:.2f}")
                why = [text if w.startswith("confidence ") else w for w in why]
            if too_few[i]:
                agreeing = int(np.asarray(n_agreeing)[i])
                text = (f"only {agreeing} informative agent{'s' if agreeing != 1 else ''} back"
                        f"{'s' if agreeing == 1 else ''} the label ({config.min_agreeing_agents} needed)")
                if best_agent_precision is not None and not math.isnan(best[i]):
                    text += f"; best calibrated precision {best[i]:.2f} < {config.target_precision:.2f}"
                why.append(text)
            reasons[i] = tuple(why)
    return routes, reasons


def _review_reasons(reasons: list, rows: np.ndarray, no_label: np.ndarray, low_confidence: np.ndarray,
                    low_s_final: np.ndarray, confidence: np.ndarray, s_final_agreeing: np.ndarray,
                    conflicted: np.ndarray, conflict_reason: Sequence[str], injected: np.ndarray,
                    injection_reason: Sequence[str], too_invalid: np.ndarray, n_invalid: np.ndarray,
                    n_answers: np.ndarray, confidence_text: str, s_final_text: str) -> None:
    """reasons[i] for each clip i in `rows` (under review), from the rules that sent it there."""
    for i, none, low_c, low_s, conf, s_fin, conflicts, inject, invalid, n_inv, n_ans in zip(
            rows.tolist(), no_label[rows].tolist(), low_confidence[rows].tolist(), low_s_final[rows].tolist(),
            np.asarray(confidence, dtype=float)[rows].tolist(),
            np.asarray(s_final_agreeing, dtype=float)[rows].tolist(), conflicted[rows].tolist(),
            injected[rows].tolist(), too_invalid[rows].tolist(), np.asarray(n_invalid)[rows].tolist(),
            np.asarray(n_answers)[rows].tolist()):
        why = []
        if none:
            why.append("no valid answers")
        if low_c:
            why.append(f"confidence {conf:.2f} < {confidence_text}")
        if low_s:
            why.append(f"mean S_final {s_fin:.2f} < {s_final_text}")
        if conflicts:
            why.append(conflict_reason[i])
        if inject:
            why.append(f"{INJECTION_REASON} ({injection_reason[i]})" if injection_reason[i] else INJECTION_REASON)
        if invalid:
            why.append(f"{int(n_inv)} of {int(n_ans)} answers invalid")
        reasons[i] = tuple(why)


def route_many(consensus: ConsensusTable, config: RouteConfig,
               calibration: "WorkspaceCalibration | None" = None) -> ConsensusTable:
    """Route every clip of a `ConsensusTable` in place (route, route_reasons, priority); returns it.
    With a `calibration`, its consensus map and per-agent maps decide (module docstring)."""
    best_agent = threshold = None
    if calibration is not None:
        per_answer = consensus.agreeing_precision
        if per_answer is not None:  # None: a table aggregated without this calibration vouches for nobody
            have = ~np.isnan(per_answer)
            best_agent = np.where(have.any(axis=1), np.max(np.where(have, per_answer, -1.0), axis=1), np.nan)
        if calibration.consensus is not None:
            threshold = calibration.consensus.threshold
    routes, reasons = _route_arrays(
        consensus.clip_ids, consensus.label >= 0, consensus.confidence, consensus.s_final_agreeing,
        consensus.conflict, consensus.conflict_reason, consensus.injection, consensus.injection_reason,
        consensus.n_invalid, consensus.n_answers, config, n_abstained=consensus.n_abstained,
        n_agreeing=consensus.n_agreeing, best_agent_precision=best_agent, calibrated_threshold=threshold)
    consensus.route = routes
    consensus.route_reasons = reasons
    consensus.priority = review_priority(consensus.margin, consensus.conflict)
    return consensus


def route(consensus: Consensus, annotations: Sequence[Annotation],
          scores: Mapping[str, JudgeScores] | Sequence[JudgeScores], config: RouteConfig,
          rng: np.random.Generator | None = None) -> Consensus:
    """Route one clip: its Consensus, its annotations and their judge scores (by annotation id,
    or a list). Same rules as `route_many`; without the label space here, an answer counts as
    invalid when its status is not OK or it has no label. `rng` is accepted for symmetry with other stages
    and not used: the audit draw is a hash of (config.seed, clip id), so re-runs agree."""
    del rng
    if not isinstance(scores, Mapping):
        scores = {s.annotation_id: s for s in scores}
    answers = [a for a in annotations if a.clip_id == consensus.clip_id] or list(annotations)
    abstained = sum(1 for a in answers if a.status == AnnotationStatus.ABSTAINED)
    invalid = sum(1 for a in answers if a.status != AnnotationStatus.OK or not a.label) - abstained
    agreeing_answers = sum(1 for a in answers if a.status == AnnotationStatus.OK and a.label == consensus.label)
    flagged = [a for a in answers if a.injection_flag]
    agreeing = [scores[a.id].s_final for a in answers
                if a.status == AnnotationStatus.OK and a.label == consensus.label and a.id in scores
                and scores[a.id].status == "ok" and scores[a.id].s_final is not None]
    dist = sorted(consensus.distribution.values(), reverse=True) + [0.0, 0.0]
    routes, reasons = _route_arrays(
        [consensus.clip_id], np.array([consensus.label is not None]), np.array([consensus.confidence]),
        np.array([float(np.mean(agreeing)) if agreeing else math.nan]), np.array([consensus.conflict]),
        [consensus.conflict_reason], np.array([bool(flagged)]), [flagged[0].injection_reason if flagged else ""],
        np.array([invalid]), np.array([len(answers)]), config, n_abstained=np.array([abstained]),
        n_agreeing=np.array([agreeing_answers]))
    priority = float(review_priority(np.array([dist[0] - dist[1]]), np.array([consensus.conflict]))[0])
    return consensus.model_copy(update={"route": ROUTES[int(routes[0])], "route_reasons": reasons[0],
                                        "priority": priority})


def review_queue(consensus: Mapping[str, Consensus] | Sequence[Consensus]) -> list[Consensus]:
    """Clips routed to review or audit, most informative first (ties: clip id)."""
    items = consensus.values() if isinstance(consensus, Mapping) else consensus
    queue = [c for c in items if c.route != Route.AUTO_ACCEPT]
    return sorted(queue, key=lambda c: (-c.priority, c.clip_id))

"""Label spaces, verbalisers (synonyms per class) and mappings between spaces.

Each space lists its native labels, each tied to an emotion concept. The concepts carry
the synonyms that the verbaliser accepts, so "joyful", "happy" and "happiness" all map
to Ekman's "happiness" and to MELD's "joy". Mapping between spaces goes through the
concepts, with documented fallbacks (IEMOCAP's excitement counts as happiness in its
4-class convention; RAVDESS' calm maps to neutral where a space has no calm).
Label lists follow the datasets' documentation (tests/data/labels/label_conventions.json).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from merforge.errors import MerforgeError

# concept -> synonyms (lower case). The first entry is the concept's own name.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "anger": ("anger", "angry", "mad", "furious", "rage", "annoyed", "irritated", "irritation", "hostile", "ang", "wut"),
    "disgust": ("disgust", "disgusted", "revulsion", "repulsed", "grossed out", "dis", "ekel"),
    "fear": ("fear", "afraid", "scared", "fearful", "anxious", "anxiety", "terrified", "nervous", "fea", "angst"),
    "happiness": ("happiness", "happy", "joy", "joyful", "amused", "amusement", "delighted", "glad", "cheerful",
                  "elated", "hap", "freude", "laughing", "pleased"),
    "sadness": ("sadness", "sad", "unhappy", "sorrow", "grief", "crying", "upset", "depressed", "melancholy",
                "trauer"),
    "surprise": ("surprise", "surprised", "astonished", "amazed", "shocked", "startled", "sur", "pleasant surprise", "ps"),
    "neutral": ("neutral", "none", "no emotion", "calm and neutral", "neu", "flat"),
    "calm": ("calm", "relaxed", "serene", "peaceful"),
    "boredom": ("boredom", "bored", "langeweile"),
    "excitement": ("excitement", "excited", "exc", "enthusiastic", "thrilled"),
    "frustration": ("frustration", "frustrated", "fru"),
    "contempt": ("contempt", "contemptuous", "scorn"),
}

# Where a space lacks a concept, use this one instead (only where the datasets' own
# conventions do so).
FALLBACKS = {"excitement": "happiness", "calm": "neutral", "frustration": "anger"}

DESCRIPTIONS: dict[str, str] = {
    "anger": "anger: hostility or irritation, a frown with lowered brows, tense lips, a loud or sharp voice",
    "disgust": "disgust: revulsion, a wrinkled nose and raised upper lip, a turning away",
    "fear": "fear: anxiety or threat, raised and drawn-together brows, widened eyes, a high tense voice",
    "happiness": "happiness: joy or amusement, smiling with raised cheeks, laughter, a bright lively voice",
    "sadness": "sadness: sorrow or grief, inner brows raised, lip corners pulled down, crying, a low slow voice",
    "surprise": "surprise: astonishment, raised brows, wide-open eyes, a dropped jaw, a sudden exclamation",
    "neutral": "neutral: no particular emotion, a relaxed face and an even voice",
    "calm": "calm: relaxed and at ease, soft steady voice",
    "boredom": "boredom: disinterest, slow flat monotonous voice",
    "excitement": "excitement: high energy and eagerness, fast loud animated voice",
    "frustration": "frustration: annoyance at being blocked, sighs, tense voice",
    "contempt": "contempt: disdain, a one-sided lip raise or smirk",
}


@dataclass(frozen=True)
class LabelSpace:
    name: str
    labels: tuple[str, ...]  # native label names, in the dataset's order
    concepts: dict[str, str] = field(default_factory=dict)  # native label -> concept

    def concept(self, label: str) -> str:
        return self.concepts[label]

    def description(self, label: str) -> str:
        return DESCRIPTIONS[self.concept(label)].replace(self.concept(label) + ":", label + ":", 1)

    def normalise(self, raw: str | None) -> str | None:
        """The label of this space that `raw` names (case, punctuation and synonyms
        tolerated), or None when it names nothing in the space."""
        if not raw:
            return None
        text = re.sub(r"[^a-z ]+", " ", raw.lower()).strip()
        text = re.sub(r"\s+", " ", text)
        if text in self.labels:
            return text
        for label in self.labels:
            if text in CONCEPTS[self.concepts[label]]:
                return label
        # One-word answers wrapped in a phrase ("the emotion is joy"): take the last word that matches.
        for word in reversed(text.split()):
            for label in self.labels:
                if word == label or word in CONCEPTS[self.concepts[label]]:
                    return label
        return None

    def map_to(self, label: str, other: "LabelSpace") -> str | None:
        """This space's label in `other`, through the concepts (None when it has no counterpart)."""
        concept = self.concepts[label]
        for candidate in (concept, FALLBACKS.get(concept)):
            for target, target_concept in other.concepts.items():
                if candidate and target_concept == candidate:
                    return target
        return None


def _space(name: str, pairs: list[tuple[str, str]]) -> LabelSpace:
    return LabelSpace(name=name, labels=tuple(p[0] for p in pairs), concepts=dict(pairs))


SPACES: dict[str, LabelSpace] = {
    space.name: space
    for space in [
        _space("ekman7", [("anger", "anger"), ("disgust", "disgust"), ("fear", "fear"), ("happiness", "happiness"),
                          ("sadness", "sadness"), ("surprise", "surprise"), ("neutral", "neutral")]),
        _space("meld", [("neutral", "neutral"), ("joy", "happiness"), ("sadness", "sadness"), ("anger", "anger"),
                        ("surprise", "surprise"), ("fear", "fear"), ("disgust", "disgust")]),
        _space("iemocap4", [("anger", "anger"), ("happiness", "happiness"), ("neutral", "neutral"),
                            ("sadness", "sadness")]),
        _space("iemocap", [("anger", "anger"), ("happiness", "happiness"), ("sadness", "sadness"),
                           ("neutral", "neutral"), ("excitement", "excitement"), ("disgust", "disgust"),
                           ("frustration", "frustration"), ("fear", "fear"), ("surprise", "surprise")]),
        _space("dfew", [("happy", "happiness"), ("sad", "sadness"), ("neutral", "neutral"), ("angry", "anger"),
                        ("surprise", "surprise"), ("disgust", "disgust"), ("fear", "fear")]),
        _space("crema-d", [("anger", "anger"), ("disgust", "disgust"), ("fear", "fear"), ("happy", "happiness"),
                           ("neutral", "neutral"), ("sad", "sadness")]),
        _space("ravdess", [("neutral", "neutral"), ("calm", "calm"), ("happy", "happiness"), ("sad", "sadness"),
                           ("angry", "anger"), ("fearful", "fear"), ("disgust", "disgust"),
                           ("surprised", "surprise")]),
        _space("emodb", [("anger", "anger"), ("boredom", "boredom"), ("disgust", "disgust"), ("fear", "fear"),
                         ("happiness", "happiness"), ("sadness", "sadness"), ("neutral", "neutral")]),
        _space("tess", [("anger", "anger"), ("disgust", "disgust"), ("fear", "fear"), ("happiness", "happiness"),
                        ("surprise", "surprise"), ("sadness", "sadness"), ("neutral", "neutral")]),
        _space("savee", [("anger", "anger"), ("disgust", "disgust"), ("fear", "fear"), ("happiness", "happiness"),
                         ("neutral", "neutral"), ("sadness", "sadness"), ("surprise", "surprise")]),
    ]
}


class LabelSpaceError(MerforgeError):
    """An unknown label space was configured."""


def get_space(name: str) -> LabelSpace:
    try:
        return SPACES[name.lower()]
    except KeyError:
        raise LabelSpaceError(f"annotate.label_space = {name!r} is not known; choose one of {', '.join(SPACES)}") from None

"""Few-shot generation prompts, and reading one example back out of what a model wrote.

Each prompt shows ``shots`` seed examples of one label, drawn afresh per prompt, so that prompts (and with
them generations) differ even at a low temperature. Small instruction models wrap their answer in quotes,
a "Message:" prefix or a bullet, and keep talking after it: :func:`clean_generation` keeps the first line
of actual text.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from stillhouse.spec import SynthesisSpec

_PREFIX = re.compile(r"^\s*(?:[-*•]\s*|\d+[.)]\s*|(?:new\s+)?(?:message|text|example|answer|reply)\s*:\s*)+", re.IGNORECASE)


def readable_label(label: str) -> str:
    """``card_arrival`` → ``card arrival``: label names are often identifiers; a model reads words."""
    return re.sub(r"[_\s]+", " ", label).strip()


def generation_prompt(synthesis: SynthesisSpec, label: str, examples: list[str]) -> str:
    """The user message asking for one new example of ``label``."""
    return synthesis.instruction.format(label=readable_label(label), task=synthesis.task_description,
                                        examples="\n".join(f"- {e}" for e in examples))


def generation_requests(synthesis: SynthesisSpec, seed: pd.DataFrame, labels: list[str],
                        seed_value: int) -> list[tuple[str, str]]:
    """``(label, prompt)`` for ``per_label`` prompts per label, each with its own random few-shot examples."""
    rng = np.random.default_rng(seed_value)
    requests = []
    for label in labels:
        texts = seed.loc[seed["label"] == label, "text"].tolist()
        for _ in range(synthesis.per_label):
            shown = rng.choice(len(texts), size=min(synthesis.shots, len(texts)), replace=False)
            requests.append((label, generation_prompt(synthesis, label, [texts[i] for i in shown])))
    return requests


_PREFACE = re.compile(r"^(?:here(?:'s| is| are)|sure|certainly|of course|okay)\b", re.I)


def clean_generation(text: str, labels: list[str] = ()) -> str:
    """The first line of actual text in a generation: without a preface line ("Here is a new message:"), list
    markers, "Message:" prefixes, wrapping quotes, or a leading label name ("Bearish: ..."), which would teach
    the student to read the label off the text instead of the content."""
    label_prefix = _label_prefix(labels)
    for line in text.strip().splitlines():
        line = line.strip()
        if not line or (_PREFACE.match(line) and (line.endswith(":") or len(line.split()) < 4)):
            continue
        line = _PREFIX.sub("", line).strip()
        if label_prefix is not None:
            line = label_prefix.sub("", line).strip()
        if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'“”":
            line = line[1:-1].strip()
        line = line.strip("\"“”").strip()
        if line:
            return line
    return ""


def _label_prefix(labels: list[str]) -> re.Pattern | None:
    names = sorted({readable_label(label) for label in labels} | set(labels), key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"^(?:" + "|".join(re.escape(n) for n in names) + r")\s*[:!\-–—]+\s*", re.I)

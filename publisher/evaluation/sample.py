"""The broad sample tokenizer parity compares on: strings cut from shipped text, and random strings.

Probes are few and chosen; the sample is many and blind. Its strings are cut at seeded random
places from two texts shipped with publisher (both written for it, MIT like the package):
``calibration.txt`` (prose, code in six languages, chat turns, seventeen other languages and
scripts, numbers and tables) and ``parity_sample.txt`` (what tokenizers disagree on: decomposed
accents, compatibility characters, joined emoji, right-to-left text, invisible and control
characters, tabs, whitespace runs, the three line ends, text that looks like special tokens).
Windows start and end anywhere, mid-word and mid-line included. The random strings draw code
points from the ranges below, also seeded, so every run and every machine compares the same text.
"""

from __future__ import annotations

import random
from functools import lru_cache
from importlib import resources

SAMPLE_TEXTS = ("parity_sample.txt", "calibration.txt")
SEED = 20261130
WINDOWS = 2000
RANDOM_STRINGS = 500
LONGEST_WINDOW = 240
LONGEST_RANDOM = 40

# Code point ranges random strings draw from: scripts, combining marks, spaces, joiners and emoji.
RANDOM_RANGES: tuple[tuple[int, int], ...] = (
    (0x20, 0x7E),  # ASCII
    (0x09, 0x0D),  # tab, line ends, vertical tab, form feed
    (0xA0, 0x17F),  # Latin-1 and Latin Extended-A
    (0x300, 0x36F),  # combining diacritical marks
    (0x370, 0x3FF),  # Greek
    (0x400, 0x4FF),  # Cyrillic
    (0x590, 0x5FF),  # Hebrew
    (0x600, 0x6FF),  # Arabic
    (0x900, 0x97F),  # Devanagari
    (0xE00, 0xE7F),  # Thai
    (0x2000, 0x206F),  # general punctuation: spaces, zero-width characters, marks
    (0x3040, 0x30FF),  # Hiragana and Katakana
    (0x4E00, 0x4FFF),  # CJK ideographs
    (0xAC00, 0xAD00),  # Hangul syllables
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFF00, 0xFFEF),  # half-width and full-width forms
    (0x1F300, 0x1F6FF),  # emoji
    (0x1F3FB, 0x1F3FF),  # skin-tone modifiers
)


def sample_text() -> str:
    """The shipped texts joined, line ends kept as written (``\\r\\n`` and lone ``\\r`` included)."""
    folder = resources.files("publisher").joinpath("data")
    return "\n\n".join(folder.joinpath(name).read_bytes().decode("utf-8") for name in SAMPLE_TEXTS)


def _random_string(rng: random.Random) -> str:
    chars = []
    for _ in range(rng.randint(1, LONGEST_RANDOM)):
        low, high = rng.choice(RANDOM_RANGES)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


@lru_cache(maxsize=1)
def broad_sample() -> tuple[str, ...]:
    """``WINDOWS`` windows of the shipped texts, then ``RANDOM_STRINGS`` random strings (fixed seed)."""
    text = sample_text()
    rng = random.Random(SEED)
    strings = []
    for _ in range(WINDOWS):
        # short windows more often than long ones: many boundaries, some long-range context
        length = max(1, int(LONGEST_WINDOW ** rng.random()))
        start = rng.randrange(len(text) - length)
        strings.append(text[start : start + length])
    strings += [_random_string(rng) for _ in range(RANDOM_STRINGS)]
    return tuple(strings)

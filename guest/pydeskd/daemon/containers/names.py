"""Container IDs and names by Docker's rules: 64-hex IDs, ``/name`` names, generated names.

What it is for: the one place that says what a valid container name is (``[a-zA-Z0-9]
[a-zA-Z0-9_.-]+``, stored with a leading ``/``), makes new IDs (64 hex digits, never all
digits, as Docker's stringid) and generates ``adjective_surname`` names when none is given.
This module is pure except for its use of ``secrets``/``random``; it must never do I/O.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Callable

from pydeskd.containerd.errors import InvalidArgument

# \Z, not $: "$" also matches before a trailing newline ("nl\n" would pass).
NAME_PATTERN = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+\Z")
ID_PATTERN = re.compile(r"^[0-9a-f]{64}\Z")

# A short selection in the spirit of moby's namesgenerator (not a copy of its lists).
ADJECTIVES = (
    "admiring", "agitated", "amazing", "angry", "awesome", "blissful", "bold", "brave",
    "busy", "charming", "clever", "compassionate", "confident", "cool", "crazy", "dazzling",
    "determined", "dreamy", "eager", "ecstatic", "elastic", "elated", "epic", "exciting",
    "fervent", "festive", "focused", "friendly", "funny", "gallant", "gifted", "goofy",
    "gracious", "happy", "hopeful", "hungry", "jolly", "keen", "kind", "laughing", "loving",
    "lucid", "magical", "modest", "nervous", "nifty", "nostalgic", "optimistic", "peaceful",
    "pensive", "practical", "priceless", "quirky", "relaxed", "serene", "sharp", "silly",
    "sleepy", "stoic", "sweet", "tender", "trusting", "upbeat", "vibrant", "vigilant",
    "wizardly", "wonderful", "youthful", "zealous", "zen",
)
SURNAMES = (
    "agnesi", "albattani", "allen", "archimedes", "babbage", "banach", "bardeen", "bell",
    "bhabha", "blackwell", "bohr", "booth", "borg", "bose", "brahmagupta", "cannon", "carson",
    "cerf", "chandrasekhar", "curie", "darwin", "davinci", "dijkstra", "einstein", "euclid",
    "euler", "fermat", "feynman", "franklin", "galileo", "gauss", "goldberg", "hamilton",
    "hawking", "heisenberg", "hertz", "hodgkin", "hopper", "hypatia", "johnson", "kepler",
    "knuth", "lamport", "leakey", "lovelace", "mayer", "mccarthy", "meitner", "mendel",
    "newton", "nobel", "noether", "pascal", "pasteur", "perlman", "poincare", "ritchie",
    "shannon", "sinoussi", "thompson", "torvalds", "turing", "wilson", "wozniak", "wright",
)


def new_id(token_hex: Callable[[int], str] = secrets.token_hex) -> str:
    """A new 64-hex ID whose 12-digit short form is not all digits (it would parse as a number)."""
    while True:
        cid = token_hex(32)
        if not cid[:12].isdigit():
            return cid


def short_id(cid: str) -> str:
    return cid[:12]


def validate_name(name: str) -> str:
    """The stored form (``/name``) of a user-given name. Raises InvalidArgument as Docker."""
    if not NAME_PATTERN.match(name):
        raise InvalidArgument(f'Invalid container name ({name}), only '
                              f'[a-zA-Z0-9][a-zA-Z0-9_.-] are allowed')
    return name if name.startswith("/") else "/" + name


def generate_name(retry: int = 0, rng: random.Random | None = None) -> str:
    """``adjective_surname``; after a collision, a digit is appended as Docker does."""
    pick = rng or random.SystemRandom()
    name = f"{pick.choice(ADJECTIVES)}_{pick.choice(SURNAMES)}"
    if name == "boring_wozniak":  # Steve Wozniak is not boring (moby's one exception)
        return generate_name(retry, rng)
    if retry > 0:
        name += str(pick.randint(0, 9))
    return name

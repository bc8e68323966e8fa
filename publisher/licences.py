"""The Hub's licence ids (kept in ``publisher/data/licences.json``) and the source files that carry licence terms.

A recipe's ``model.license`` must be one of the ids the Hub documents for model cards; an unknown
one is refused with the nearest id (``Apache 2.0`` -> ``apache-2.0``). Known ids bring their full
name, the address of their text and, for licences that have one (Llama, Gemma), the acceptable-use
policy, so the card can link them without the recipe repeating them.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "licences.json"
# Source files picked up without being asked for: a repo's licence, its use policy, its notices.
LICENCE_FILE_PATTERNS = ("LICENSE*", "LICENCE*", "USE_POLICY*", "NOTICE*")


@dataclass(frozen=True)
class KnownLicence:
    """One of the Hub's licence ids, with what the card says about it."""

    id: str
    name: str
    url: str | None = None
    use_policy: str | None = None


@cache
def known_licences() -> dict[str, KnownLicence]:
    """Every licence id the Hub documents, by id."""
    data = json.loads(DATA.read_text(encoding="utf-8"))["licences"]
    return {key: KnownLicence(id=key, **value) for key, value in data.items()}


def _comparable(text: str) -> str:
    return re.sub(r"[\s_]+", "-", text.strip().lower())


def licence_id_problem(value: str) -> str | None:
    """Why ``value`` is not a Hub licence id (with the nearest id), or ``None`` when it is one."""
    known = known_licences()
    if value in known:
        return None
    wanted = _comparable(value)
    close = [key for key in known if _comparable(key) == wanted]
    close = close or difflib.get_close_matches(wanted, list(known), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (
        f"{value!r} is not a licence id the Hub knows; {hint}"
        "For a licence the Hub does not list, use other with license_name and license_link"
    )


def is_licence_file(name: str) -> bool:
    """True for a file name the source's licence terms are picked up from (LICENSE*, USE_POLICY*, NOTICE*)."""
    return any(fnmatch.fnmatch(name.upper(), pattern) for pattern in LICENCE_FILE_PATTERNS)


def is_relative_link(link: str) -> bool:
    """True for a link that names a file of the repo (``LICENSE``) rather than an address."""
    return not re.match(r"\A(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)", link)

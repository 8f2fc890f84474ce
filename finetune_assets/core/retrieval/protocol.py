"""The evaluation protocol of the shared test collections: settings are chosen on development collections only.

Development collections (cranfield, cacm) may inform any choice, by hand or by the smart-defaults generator.
Check collections (med, lisa) are run with today's defaults to see whether a change generalises, and reported;
nothing may be chosen because it scores better there. Any other collection is treated as a check collection.
"""
from __future__ import annotations

from pathlib import Path

DEVELOPMENT = ("cranfield", "cacm")
CHECK = ("med", "lisa")


def collection_name(path_or_name: str | Path) -> str:
    """The collection's name: the last folder of a BEIR path (`../shared/ir-data/cacm` -> `cacm`)."""
    return Path(str(path_or_name).rstrip("/")).name.lower()


def role(path_or_name: str | Path) -> str:
    """'development' for a development collection, else 'check'."""
    return "development" if collection_name(path_or_name) in DEVELOPMENT else "check"


def require_development(path_or_name: str | Path, purpose: str) -> str:
    """The collection's name when `purpose` (a choice of settings) may read it; a ValueError naming the rule if not."""
    name = collection_name(path_or_name)
    if name not in DEVELOPMENT:
        raise ValueError(f"{purpose} may read only the development collections ({', '.join(DEVELOPMENT)}), not "
                         f"{name!r}: check collections ({', '.join(CHECK)}) and unseen corpora are for reporting "
                         "today's defaults, never for choosing settings")
    return name

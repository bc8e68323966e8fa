"""The card's "Which file should I choose" section, computed from the measured sizes and KL divergences.

Nothing here is fixed advice: every line is a comparison between measured files (size on disk,
KLD against the reference), so the section cannot say one thing while the table says another.
It is left out of a card whose files have no KLD measured.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from publisher import report
from publisher.formats import gguf_quants
from publisher.manifest import Artifact, Manifest

# The KLD limits the budget table asks about: from hard to tell apart from the reference to clearly degraded.
KLD_BUDGETS = (0.01, 0.05, 0.1, 0.5)


@dataclasses.dataclass(frozen=True)
class Measured:
    """One tested file with its measured KLD."""

    name: str
    size_bytes: int
    kl_divergence: float
    imatrix: bool
    needs_imatrix: bool

    def row(self) -> dict[str, str]:
        """Its cells, formatted like the provided-files and measured-quality tables."""
        return {
            "name": self.name,
            "size": report.format_bytes(self.size_bytes),
            "kld": report.figure(self.kl_divergence, ".4f", report.CARD.missing),
        }


def _measured(artifact: Artifact) -> Measured | None:
    quality = artifact.quality
    if quality is None or quality.kl_divergence is None:
        return None
    entry = gguf_quants.CATALOGUE.get(artifact.base_type or artifact.quant_type)
    return Measured(
        name=Path(artifact.path).name,
        size_bytes=artifact.size_bytes,
        kl_divergence=quality.kl_divergence,
        imatrix=artifact.imatrix_sha256 is not None,
        needs_imatrix=entry is not None and entry.needs_imatrix,
    )


def worth_their_size(files: list[Measured]) -> list[Measured]:
    """The files no other file beats on both counts (smaller and closer to the reference), smallest first."""
    frontier: list[Measured] = []
    for file in sorted(files, key=lambda f: (f.size_bytes, f.kl_divergence)):
        if not frontier or file.kl_divergence < frontier[-1].kl_divergence:
            frontier.append(file)
    return frontier


def choosing_context(manifest: Manifest | None) -> dict[str, Any] | None:
    """What the section shows, or ``None`` when no passed file has a measured KLD."""
    if manifest is None:
        return None
    files = [m for m in map(_measured, manifest.passed_artifacts()) if m is not None]
    if not files:
        return None
    budgets = []
    for budget in KLD_BUDGETS:
        within = [f for f in files if f.kl_divergence <= budget]
        if within:
            smallest = min(within, key=lambda f: (f.size_bytes, f.kl_divergence))
            budgets.append({"budget": f"{budget:g}", **smallest.row()})
    steps = []
    frontier = worth_their_size(files)
    for previous, file in zip([None, *frontier], frontier, strict=False):
        gain = None
        if previous is not None and file.size_bytes > previous.size_bytes:
            gain = (previous.kl_divergence - file.kl_divergence) / ((file.size_bytes - previous.size_bytes) / 1e9)
        steps.append({**file.row(), "gain": "-" if gain is None else f"{gain:.4g}"})
    return {
        "budgets": budgets,
        "largest_budget": f"{KLD_BUDGETS[-1]:g}",
        "frontier": steps,
        "imatrix_files": [f.name for f in files if f.imatrix],
        "needs_imatrix": [f.name for f in files if f.needs_imatrix],
    }

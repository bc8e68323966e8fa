"""How figures are shown, once: bytes, a missing value, and an artifact's quality cells.

The build's terminal table, the CI summary (``publisher summary``) and the model card all show
the same figures; they differ only in presentation (a terminal wants ``-``, Markdown ``n/a`` or
``—``; a card shows one more digit of perplexity), so each picks a :class:`QualityStyle`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from publisher.manifest import Artifact


def format_bytes(size_bytes: float | None, unit: Literal["GB", "MB", "any"] | None = None) -> str:
    """Bytes in decimal units, as the Hub shows them.

    Without ``unit``: ``8.18 GB``, or ``54.4 MB`` below 1 GB. With ``unit="GB"``: always GB, two
    decimals (disk plans); with ``unit="MB"``: always MB, one decimal, thousands separated; with
    ``unit="any"``: the largest of GB, MB and kB that fits, one decimal, else bytes (publish plans,
    where a card of a few kB sits beside the model files).
    """
    if size_bytes is None:
        return "unknown"
    if unit == "any":
        for name, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if size_bytes >= scale:
                return f"{size_bytes / scale:.1f} {name}"
        return f"{size_bytes:.0f} B"
    if unit == "MB" or (unit is None and size_bytes < 1e9):
        return f"{size_bytes / 1e6:{',' if unit else ''}.1f} MB"
    return f"{size_bytes / 1e9:.2f} GB"


def figure(value: float | None, spec: str, missing: str) -> str:
    """``value`` formatted with ``spec``, or the ``missing`` marker."""
    return missing if value is None else format(value, spec)


@dataclass(frozen=True)
class QualityStyle:
    """How one view shows quality figures."""

    missing: str
    perplexity: str  # format spec
    percent: str  # after a top-1 agreement figure


TERMINAL = QualityStyle(missing="-", perplexity=".3f", percent="")
SUMMARY = QualityStyle(missing="n/a", perplexity=".3f", percent="%")
CARD = QualityStyle(missing="—", perplexity=".4f", percent="%")


@dataclass(frozen=True)
class QualityCells:
    """An artifact's measured figures as text."""

    perplexity: str
    kl_divergence: str
    top1_agreement: str
    tokens_per_s: str


def quality_cells(artifact: Artifact, style: QualityStyle) -> QualityCells:
    """Perplexity, KL divergence, top-1 agreement (in percent) and generation speed of ``artifact``."""
    quality, smoke = artifact.quality, artifact.smoke
    top1 = quality.top1_agreement if quality else None
    return QualityCells(
        perplexity=figure(quality.perplexity if quality else None, style.perplexity, style.missing),
        kl_divergence=figure(quality.kl_divergence if quality else None, ".4f", style.missing),
        top1_agreement=style.missing if top1 is None else f"{top1 * 100:.1f}{style.percent}",
        tokens_per_s=figure(smoke.tokens_per_s if smoke else None, ".1f", style.missing),
    )

"""The one exception family the CLI knows how to turn into a single line."""

from __future__ import annotations


class PublisherError(Exception):
    """Base of every error a user can cause or fix; the CLI prints ``str(err)`` and exits 1."""


class RecipeError(PublisherError):
    """A recipe file is unreadable, malformed or fails validation.

    ``problems`` holds one line per problem, each already naming file, line and field.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(PublisherError):
    """The source model cannot be fetched or is missing files the build needs."""


class DiskSpaceError(PublisherError):
    """Not enough free disk for the planned build."""


class ConversionError(PublisherError):
    """llama.cpp's converter failed."""


class QuantizationError(PublisherError):
    """llama.cpp's quantizer failed."""


class SmokeTestError(PublisherError):
    """One or more artifacts failed their smoke, parity or quality checks."""


class ManifestError(PublisherError):
    """The build manifest is unreadable or inconsistent with the files on disk."""


class CardError(PublisherError):
    """A card template failed to render or a rendered card failed its checks."""


class PublishError(PublisherError):
    """Publishing to a target failed or was refused."""

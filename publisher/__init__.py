"""publisher: build, test, describe and publish quantized GGUF models reproducibly."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("publisher")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

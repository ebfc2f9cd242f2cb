"""Deepfake Shield: find face-swap deepfakes in photos and videos."""

from typing import TYPE_CHECKING, Any

from deepshield.errors import DeepShieldError

if TYPE_CHECKING:  # type checkers see Detector's real type; at run time it is imported on first use
    from deepshield.inference.analysis import Detector

__version__ = "0.1.0"

__all__ = ["DeepShieldError", "Detector", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import deepshield` stays cheap for the CLI's --help and for tools that only need errors.
    if name == "Detector":
        from deepshield.inference.analysis import Detector

        return Detector
    raise AttributeError(f"module 'deepshield' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "Detector"])

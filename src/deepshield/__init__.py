"""Deepfake Shield: find face-swap deepfakes in photos and videos."""

from deepshield.errors import DeepShieldError

__version__ = "0.1.0"

__all__ = ["DeepShieldError", "Detector", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import deepshield` stays cheap for the CLI's --help and for tools that only need errors.
    if name == "Detector":
        from deepshield.inference.analysis import Detector

        return Detector
    raise AttributeError(name)

"""MediaPipe, imported without the plotting library it imports and this project never uses.

`import mediapipe` runs mediapipe.python.solutions, whose drawing_utils imports matplotlib.pyplot (for its
plot_landmarks alone): about a second of every `deepshield scan`, `serve` start and worker start on two busy
cores, more than a photo's whole analysis. While MediaPipe is imported, matplotlib and its pyplot are stand-ins
that import the real module when drawing_utils first uses it; they are gone from sys.modules afterwards, so
any other `import matplotlib` gets the real one. Another thread's `import matplotlib` while MediaPipe is imported
gets a stand-in: its first use waits for that import to end, then reaches the real module.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType
from typing import Any

_PLOTTING = ("matplotlib", "matplotlib.pyplot")
_lock = threading.Lock()
_importing = [0]  # the thread importing MediaPipe while the stand-ins are in sys.modules


class _ImportedOnUse(ModuleType):
    """A module that imports the real one of its name when an attribute of it is first read."""

    def __getattr__(self, name: str) -> Any:
        if sys.modules.get(self.__name__) is self and threading.get_ident() != _importing[0]:
            # Another thread's, while MediaPipe is imported: the real module was the stand-in itself (its use
            # recursed until a RecursionError, `import matplotlib.ticker` found no package); it is there after.
            with _lock:
                pass
        elif name.startswith("__"):  # the import system's own questions (__path__, __file__): not a use
            raise AttributeError(name)
        return getattr(importlib.import_module(self.__name__), name)


def import_mediapipe() -> ModuleType:
    """The mediapipe package (imported once per process, as any import)."""
    with _lock:
        if "mediapipe" in sys.modules:
            return sys.modules["mediapipe"]
        stand_ins = {name: _ImportedOnUse(name) for name in _PLOTTING if name not in sys.modules}
        if "matplotlib" in stand_ins:  # `import matplotlib.pyplot as plt` reads pyplot off its package
            stand_ins["matplotlib"].__dict__["pyplot"] = (
                stand_ins.get("matplotlib.pyplot") or sys.modules["matplotlib.pyplot"]
            )
        sys.modules.update(stand_ins)
        _importing[0] = threading.get_ident()
        try:
            mediapipe = importlib.import_module("mediapipe")
        finally:
            _importing[0] = 0
            for name, stand_in in stand_ins.items():
                if sys.modules.get(name) is stand_in:
                    del sys.modules[name]
        return mediapipe

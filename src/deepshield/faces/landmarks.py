"""Dense 468-point face mesh (MediaPipe), used where a face outline is needed: synthesis masks."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from deepshield.faces.mediapipe_import import import_mediapipe
from deepshield.native_logs import native_output_silenced


class FaceMesher:
    def __init__(self) -> None:
        with native_output_silenced():
            self._mesh = import_mediapipe().solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.3
            )
            # The graph starts its models on its own threads, which log as they start: wait for them
            # (a first inference) before letting stderr through.
            self._mesh.process(np.zeros((192, 192, 3), np.uint8))
        self._lock = threading.Lock()
        self._found_a_face = False  # the graph logs a warning the first time it finds one

    def landmarks(self, image: NDArray[Any]) -> NDArray[Any] | None:
        """468 x 2 pixel coordinates of the most prominent face, or None when no face is found."""
        with self._lock:
            with native_output_silenced() if not self._found_a_face else contextlib.nullcontext():
                result = self._mesh.process(np.ascontiguousarray(image))
            self._found_a_face = self._found_a_face or bool(result.multi_face_landmarks)
        if not result.multi_face_landmarks:
            return None
        height, width = image.shape[:2]
        points = result.multi_face_landmarks[0].landmark
        return np.array([[p.x * width, p.y * height] for p in points], dtype=np.float32)

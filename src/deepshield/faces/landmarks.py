"""Dense 468-point face mesh (MediaPipe), used where a face outline is needed: synthesis masks."""

from __future__ import annotations

import threading

import numpy as np


class FaceMesher:
    def __init__(self) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.3
        )
        self._lock = threading.Lock()

    def landmarks(self, image: np.ndarray) -> np.ndarray | None:
        """468 x 2 pixel coordinates of the most prominent face, or None when no face is found."""
        with self._lock:
            result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        height, width = image.shape[:2]
        points = result.multi_face_landmarks[0].landmark
        return np.array([[p.x * width, p.y * height] for p in points], dtype=np.float32)

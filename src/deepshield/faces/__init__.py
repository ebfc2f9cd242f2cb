"""Faces: detection, landmarks, and the one crop policy shared by training and inference."""

from deepshield.faces.crop import CropPolicy, FaceCrop, crop_face
from deepshield.faces.detector import Box, Face, FaceDetector

__all__ = ["Box", "CropPolicy", "Face", "FaceCrop", "FaceDetector", "crop_face"]

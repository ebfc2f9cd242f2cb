"""Inference: the ONNX Runtime classifier and the image / video analysis built on it."""

"""Training: face bank of real faces, on-the-fly fakes, augmentation, the loop, calibration, export."""

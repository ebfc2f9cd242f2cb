"""Evaluation: metrics with their edge cases, calibration, and plots of both."""

"""Experiment tracking: MLflow through its client API (no global state), or nothing."""

from deepshield.tracking.tracker import MlflowTracker, NullTracker, Tracker, open_tracker, where_to_look

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "open_tracker", "where_to_look"]

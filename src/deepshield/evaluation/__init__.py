"""Evaluation: metrics with their edge cases and bootstrap intervals (`metrics`), calibration
(`calibration`, `recalibrate`), perturbations (`perturb`), scoring a labelled set once (`scoring`),
every figure of a report (`summary`), the report folder (`report`) and plots (`plots`)."""

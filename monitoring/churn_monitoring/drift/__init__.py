"""Drift detection: each window of live customers against the reference sample in the model artefact."""

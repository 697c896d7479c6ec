"""Evaluation: metrics, explaining inside YOLO validation, method comparison, reports, training callbacks."""

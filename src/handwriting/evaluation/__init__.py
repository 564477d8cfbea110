"""Evaluation of trained models: metrics, galleries and explanations of their predictions."""

"""Inference: a finished run loaded for use, routing, export and the model card."""

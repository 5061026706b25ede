"""Evaluation: generation, text metrics, syntax checks, sandboxed execution, efficiency.

Submodules are imported on use (``from hybridcl.evaluation.registry import score``) so that importing
the package does not import torch or transformers.
"""

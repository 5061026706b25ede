"""Row 0 of the matrix kept across runs: the base model's cells, computed once per study.

Row 0 scores every task with every component off. Runs that share the base model, the evaluation
examples and the settings that shape a cell (a sweep's strategies, seeds and learning rates) compute
the same row 0; with ``eval.base_cells`` set to a folder, the first run stores each cell there and
the others read it back (``"base_cells": true`` in the cell, ``eval_seconds`` 0 as for a reused
cell), predictions and per-example statistics included.

A cell is found by a key that hashes what decides it: the data and evaluation settings, the task's
evaluation examples, and the bytes of the logits the model returns, components off, for a fixed
probe batch. The probe stands in for the weights and for everything the wrapping could change in
the forward pass (a LoRA wrapper with its adapters disabled and an extra block routed off both give
the plain base's logits bit for bit); a model that computes anything differently gets another key
and computes its own row 0. Keys include the hybridcl and torch versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

import hybridcl
from hybridcl.config.experiment import ExperimentConfig
from hybridcl.records.io import load_tensors, read_json, save_tensors, write_json

# what of data.* and eval.* shapes a cell of row 0 (the rest, e.g. data.max_train, does not)
_DATA_KEYS = ("direction", "completion_target", "prompt", "max_source_len", "max_target_len", "long_targets")
_EVAL_KEYS = (
    "max_new_tokens",
    "precision",
    "batch_size",
    "num_beams",
    "do_sample",
    "temperature",
    "top_p",
    "no_repeat_ngram_size",
    "reference_metrics",
    "max_examples",
    "split",
)


class BaseCells:
    """The folder of stored row-0 cells (one ``<key>.json`` and ``<key>.safetensors`` per cell)."""

    def __init__(self, folder: str | Path, config: ExperimentConfig, model: torch.nn.Module):
        self.folder = Path(folder)
        settings = {
            "data": {k: getattr(config.data, k, None) for k in _DATA_KEYS},
            "eval": {k: getattr(config.eval, k, None) for k in _EVAL_KEYS},
            "model": dataclasses.asdict(config.model),
            "hybridcl": hybridcl.__version__,
            "torch": torch.__version__,
        }
        self._settings = json.dumps(settings, sort_keys=True, default=str)
        self._probe: str | None = None
        self._model: Any = model  # a Hugging Face model (PEFT-wrapped or not)

    def key(self, task: str, examples: list) -> str:
        """The cell's key: the settings, the task's evaluation examples (every loss-scored one; the
        generated ones are their first ``eval.max_examples``) and the model's probe logits, hashed."""
        digest = hashlib.sha256(self._settings.encode())
        digest.update(self._probe_digest().encode())
        digest.update(task.encode())
        for ex in examples:
            digest.update(json.dumps([ex.id, ex.source, ex.target]).encode())
        return digest.hexdigest()[:32]

    @torch.no_grad()
    def _probe_digest(self) -> str:
        """The sha256 of the float32 logits of a fixed batch (2 rows of 16 token ids), the model as
        routed now (components off: the caller is inside ``base_only``)."""
        if self._probe is None:
            model = self._model
            device = next(model.parameters()).device
            generator = torch.Generator().manual_seed(0)
            vocab = model.get_input_embeddings().num_embeddings
            ids = torch.randint(3, vocab, (2, 16), generator=generator).to(device)
            kwargs = {"input_ids": ids}
            if model.config.is_encoder_decoder:
                kwargs["decoder_input_ids"] = ids[:, :4]
            was_training = model.training
            model.eval()
            try:
                logits = model(**kwargs).logits.float().cpu().numpy()
            finally:
                model.train(was_training)
            self._probe = hashlib.sha256(np.ascontiguousarray(logits).tobytes()).hexdigest()
        return self._probe

    def get(self, key: str) -> dict | None:
        """The stored cell's ``values``, ``predictions``, ``hit_limit`` and ``stats``; None if absent."""
        meta, tensors = self.folder / f"{key}.json", self.folder / f"{key}.safetensors"
        if not (meta.exists() and tensors.exists()):
            return None
        stored = read_json(meta)
        stats = {m: t.numpy() for m, t in load_tensors(tensors).items()}
        values = {**stored["values"], "base_cells": True, "eval_seconds": 0.0}
        predictions, hit_limit = stored["predictions"], stored["hit_limit"]
        return {"values": values, "predictions": predictions, "hit_limit": hit_limit, "stats": stats}

    def put(self, key: str, values: dict, predictions: list[str], hit_limit: list[bool], stats: dict) -> None:
        """Store a computed cell (statistics first: a cell is found only once its .json exists)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.folder / f"{key}.safetensors", {m: torch.from_numpy(np.asarray(s)) for m, s in stats.items()})
        write_json(self.folder / f"{key}.json", {"values": values, "predictions": predictions, "hit_limit": hit_limit})

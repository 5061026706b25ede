"""Benchmark scripts' arithmetic (benchmarks/*.py print numbers; what they compute is checked here)."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("padding", ROOT / "benchmarks" / "padding.py")
padding = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(padding)


def test_padding_share_by_hand():
    # causal rows of 5, 1, 4, 2 tokens in batches of 2, length-grouped: [5, 4], [2, 1] -> 12 real of 14
    causal = padding.padding_share([5, 1, 4, 2], None, 2)
    assert (causal["real_tokens"], causal["padded_positions"]) == (12, 14)
    assert causal["padding_share"] == pytest.approx(1 - 12 / 14, abs=1e-4)
    # seq2seq, grouped by source + target (8, 2, 5, 3): batches {0, 2}, {3, 1}; sources pad to 5 and 2
    # (12 real of 14), targets to 3 and 1 (6 of 8)
    seq2seq = padding.padding_share([5, 1, 4, 2], [3, 1, 1, 1], 2)
    assert (seq2seq["real_tokens"], seq2seq["padded_positions"]) == (18, 22)

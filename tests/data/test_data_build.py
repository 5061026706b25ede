"""The bundled corpus is reproducible: a fresh build equals the shipped files byte for byte."""

import json

import pytest

from hybridcl.data.build import (
    LANGUAGES_SHIPPED,
    SourceUnavailable,
    build_corpus,
    compare_dirs,
    default_out_dir,
    shipped_files,
)
from hybridcl.data.readers import bundled_languages, read_split


def test_build_reproduces_shipped_corpus(tmp_path):
    try:
        manifest = build_corpus(tmp_path, progress=False, echo=lambda *a: None)
    except SourceUnavailable as exc:  # another Python version, or npm / apt offline without a cache
        pytest.skip(f"pinned corpus sources not available here: {exc}")
    assert compare_dirs(tmp_path) == []
    assert set(shipped_files(tmp_path)) >= {
        "manifest.json",
        "python.train.jsonl.gz",
        "javascript.valid.jsonl.gz",
        "LICENSE.cpython.txt",
        "go.test.jsonl.gz",
        "ruby.train.jsonl.gz",
        "php.valid.jsonl.gz",
        "java.test.jsonl.gz",
        "LICENSE.golang-1.19-src.txt",
        "LICENSE.react-native.txt",
    }
    assert manifest["languages"]["javascript"]["counts"]["train"] >= 2000


def test_shipped_corpus_has_six_languages_three_disjoint_splits_under_10_mb():
    manifest = json.loads((default_out_dir() / "manifest.json").read_text())
    assert bundled_languages() == sorted(LANGUAGES_SHIPPED) == ["go", "java", "javascript", "php", "python", "ruby"]
    assert sum((default_out_dir() / name).stat().st_size for name in shipped_files()) < 10 * 2**20
    for language in LANGUAGES_SHIPPED:
        files = {}
        for split in ("train", "valid", "test"):
            records, _ = read_split("bundled", None, language, split)
            assert (
                len(records) == manifest["languages"][language]["counts"][split] >= 49
            )  # java's test split is the smallest
            files[split] = {(r.repo, r.path) for r in records}
        assert (
            not (files["train"] & files["valid"])
            and not (files["train"] & files["test"])
            and not (files["valid"] & files["test"])
        )
        for source in manifest["languages"][language]["sources"]:
            assert (default_out_dir() / source["license_file"]).is_file() and source["license"] in (
                "PSF-2.0",
                "MIT",
                "BSD-3-Clause",
            )

"""The bundled corpus: pinned, permissively licensed sources run through the extractor.

Python: the standard library of CPython 3.11.7 (PSF licence), read from the running
interpreter's ``Lib`` folder, so the build needs exactly that Python version. JavaScript: MIT
npm packages at exact versions, fetched with ``npm pack`` (the tarball's sha256 is checked).
The output (``<lang>.<split>.jsonl.gz`` with gzip mtime 0, ``manifest.json``, the licence texts)
is the same bytes on every build.
"""
from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from hybridcl.data.extract import ExtractResult, Filters, TreeSource, extract
from hybridcl.data.records import write_records
from hybridcl.errors import DataError

PYTHON_VERSION = "3.11.7"
CPYTHON_URL = f"https://github.com/python/cpython/blob/v{PYTHON_VERSION}/Lib/{{path}}#L{{start}}-L{{end}}"
FILTERS = Filters()
SPLITS_SHIPPED = ("train", "valid")


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    license: str
    sha256: str  # of the tarball npm pack writes
    license_file: str  # inside the tarball's package/ folder
    # Whole-library bundles that repeat the per-function modules: left out so that the functions
    # come from their own small files and spread over both splits (the split is by file).
    exclude: tuple[str, ...] = ()


NPM_PACKAGES = (
    NpmPackage("lodash", "4.17.21", "MIT", "6a087ac9e5702a0c9d60fbcd48696012646ec8df1491dea472b150e79fcaf804", "LICENSE",
               ("lodash.js", "core.js", "fp.js")),
    NpmPackage("async", "3.2.6", "MIT", "6bb45cfba08cd2eea39eb3ce6eaa94113070fe137ec0bd4a9f122be9a0250e6f", "LICENSE"),
    NpmPackage("date-fns", "2.30.0", "MIT", "0a6899307d0887bb23b9b982068b4f4a6509e3075fc798ad0d8abe6b0dc2cc4e", "LICENSE.md"),
    NpmPackage("ramda", "0.30.1", "MIT", "76a1e5c64d5e46c58067f90fb556f7e803bcc741228312ce8bb88035a2157d9a", "LICENSE.txt",
               ("dist", "es")),
    NpmPackage("eslint", "8.57.0", "MIT", "97ec696de2427643aaa7cfa0478ea4fc8ef964c3b2fc9b1f4b57b5180629cf12", "LICENSE"),
    NpmPackage("webpack", "5.94.0", "MIT", "5dcc6331cc48e04b8540ed076d086cc22f3b544448bb2495f9dc94e6c0328bd5", "LICENSE"),
    NpmPackage("mocha", "10.7.3", "MIT", "6ae75159720a11d18883f87f1400e7e3e923a6b5437f5c75131790378d3e9338", "LICENSE"),
    NpmPackage("commander", "12.1.0", "MIT", "56affc6ddafe486f94b428ae2823d059cf60d4dae2f33eaaf1b1ec4306f73173", "LICENSE"),
    NpmPackage("express", "4.21.0", "MIT", "b286ac08db99b23b0df74a453aff20839e8ab657650849c76ee04ddfb73e8fe0", "LICENSE"),
)


class SourceUnavailable(DataError):
    """A pinned source cannot be had here (other Python version, npm missing or offline)."""


def default_out_dir() -> Path:
    return Path(__file__).resolve().parent / "corpus"


def stdlib_dir() -> Path:
    if platform.python_version() != PYTHON_VERSION:
        raise SourceUnavailable(f"the bundled corpus is built from the CPython {PYTHON_VERSION} standard library, but this is Python "
                                f"{platform.python_version()}; run `hybridcl data build` with Python {PYTHON_VERSION}")
    return Path(sysconfig.get_paths()["stdlib"])


def fetch_npm(package: NpmPackage, dest: Path) -> Path:
    """``npm pack NAME@VERSION`` into ``dest``, check the sha256, unpack; returns the package folder."""
    npm = shutil.which("npm")
    if npm is None:
        raise SourceUnavailable(f"npm is not installed: it is needed to fetch {package.name}@{package.version}; install Node.js/npm")
    spec = f"{package.name}@{package.version}"
    proc = subprocess.run([npm, "pack", spec, "--pack-destination", str(dest), "--ignore-scripts", "--prefer-offline", "--silent"],
                          capture_output=True, text=True, cwd=dest)
    tarball = dest / f"{package.name}-{package.version}.tgz"
    if proc.returncode != 0 or not tarball.is_file():
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SourceUnavailable(f"npm pack {spec} failed ({last}); the npm registry or the npm cache must be reachable")
    digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
    if digest != package.sha256:
        raise DataError(f"{tarball}: sha256 {digest} differs from the pinned {package.sha256}; the registry served other bytes for {spec}")
    target = dest / package.name
    with tarfile.open(tarball) as tar:
        tar.extractall(target, filter="data")
    return target / "package"


def build_corpus(out_dir: str | Path | None = None, progress: bool = True, echo=print) -> dict:
    """Build the bundled corpus into ``out_dir`` (default: the package's ``data/corpus``); returns the manifest."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    started = time.perf_counter()
    stdlib = stdlib_dir()
    with tempfile.TemporaryDirectory(prefix="hybridcl-build-") as tmp:
        tmp_path = Path(tmp)
        roots = {p.name: fetch_npm(p, tmp_path) for p in NPM_PACKAGES}
        python = extract([TreeSource(str(stdlib), "python/cpython", "Lib/", CPYTHON_URL, exclude=("site-packages",))],
                         "python", FILTERS, progress=progress)
        javascript = extract([TreeSource(str(roots[p.name]), f"npm:{p.name}@{p.version}", "", f"https://unpkg.com/{p.name}@{p.version}/{{path}}", p.exclude)
                              for p in NPM_PACKAGES], "javascript", FILTERS, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        licenses = {"cpython": _copy(stdlib / "LICENSE.txt", out / "LICENSE.cpython.txt")}
        for p in NPM_PACKAGES:
            licenses[p.name] = _copy(roots[p.name] / p.license_file, out / f"LICENSE.{p.name}.txt")
    manifest = {
        "format": 1,
        "description": "hybridcl bundled corpus: documented functions extracted with `hybridcl data build` "
                       "(CodeSearchNet fields and filters, near-duplicates removed, split by file).",
        "built_with": {"python": PYTHON_VERSION, "tree-sitter": metadata.version("tree-sitter"),
                       "tree-sitter-javascript": metadata.version("tree-sitter-javascript")},
        "filters": asdict(FILTERS),
        "languages": {},
    }
    sources = {
        "python": [{"name": "cpython-stdlib", "version": PYTHON_VERSION, "license": "PSF-2.0", "license_file": licenses["cpython"],
                    "repo": "python/cpython", "url": f"https://github.com/python/cpython/tree/v{PYTHON_VERSION}/Lib"}],
        "javascript": [{"name": p.name, "version": p.version, "license": p.license, "license_file": licenses[p.name],
                        "repo": f"npm:{p.name}@{p.version}", "url": f"https://www.npmjs.com/package/{p.name}/v/{p.version}",
                        "tarball_sha256": p.sha256, "excluded": list(p.exclude)} for p in NPM_PACKAGES],
    }
    for language, result in (("python", python), ("javascript", javascript)):
        manifest["languages"][language] = _write_language(out, language, result, sources[language])
        echo(result.report.table())
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    echo(f"corpus written to {out} in {time.perf_counter() - started:.1f} s")
    return manifest


def _copy(src: Path, dst: Path) -> str:
    if not src.is_file():
        raise DataError(f"{src}: licence file missing from the pinned source; the source layout changed")
    dst.write_bytes(src.read_bytes())
    return dst.name


def _write_language(out: Path, language: str, result: ExtractResult, sources: list[dict]) -> dict:
    files = {}
    counts = {}
    for split in SPLITS_SHIPPED:
        name = f"{language}.{split}.jsonl.gz"
        write_records(result.splits[split], out / name)
        data = (out / name).read_bytes()
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        counts[split] = len(result.splits[split])
    for source in sources:
        source["counts"] = {split: sum(r.repo == source["repo"] for r in result.splits[split]) for split in SPLITS_SHIPPED}
    return {"counts": counts, "files": files, "sources": sources, "extract_report": result.report.to_dict()}


def shipped_files(corpus_dir: str | Path | None = None) -> list[str]:
    """Names of the files a build writes (all but none of the folder's other files)."""
    folder = Path(corpus_dir) if corpus_dir is not None else default_out_dir()
    return sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")) and p.suffix != ".py")


def compare_dirs(built: str | Path, shipped: str | Path | None = None) -> list[str]:
    """Files that differ between a fresh build and the shipped corpus (empty = byte for byte equal)."""
    built, shipped = Path(built), Path(shipped) if shipped is not None else default_out_dir()
    names = sorted(set(shipped_files(built)) | set(shipped_files(shipped)))
    return [n for n in names if not (built / n).is_file() or not (shipped / n).is_file()
            or (built / n).read_bytes() != (shipped / n).read_bytes()]


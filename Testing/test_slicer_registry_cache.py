"""The model selector's registry refresh verifies downloaded weights once per unchanged file, with real files:
every SHA-256 read is counted through a wrapper around the real hashing function, and a tampered file
(same size, mtime put back) is read again and refused."""

import hashlib
import json
import os
import shutil
import sys
import time
import zipfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import slicer_fixtures as fx  # noqa: E402
from TACEResponseLib import model_choices, model_package  # noqa: E402
from TACEResponseLib.errors import ModelError  # noqa: E402

pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture
def downloaded_model(tmp_path, monkeypatch):
    """A registry with one downloadable model whose archive is already in the download cache."""
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_package, "_VERIFIED_SHA256", {})
    fx.write_random_model(tmp_path / "pkg", name="remote")
    archive = tmp_path / "remote.zip"
    with zipfile.ZipFile(str(archive), "w") as bundle:
        for path in (tmp_path / "pkg").iterdir():
            bundle.write(str(path), "remote/" + path.name)
    digest = model_package.sha256_of(archive)
    registry = tmp_path / "models.json"
    registry.write_text(json.dumps({"models": [
        {"name": "remote", "url": archive.as_uri(), "sha256": digest, "title": "Remote model"}]}))
    monkeypatch.setattr(model_package, "REGISTRY_PATH", registry)
    cached = model_package.cache_dir() / "downloads" / "remote-{}.zip".format(digest[:16])
    cached.parent.mkdir(parents=True)
    shutil.copy(str(archive), str(cached))
    reads = []
    real = model_package.sha256_of
    monkeypatch.setattr(model_package, "sha256_of", lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    return registry, reads


def _refresh(registry):
    (choice,) = model_choices.model_choices(registry_path=registry)
    return choice


def test_refresh_reads_each_unchanged_file_once(downloaded_model):
    registry, reads = downloaded_model
    first = _refresh(registry)
    assert first.available and first.card["name"] == "remote"
    # the cached archive (it names its unzip folder) and the weights in it
    assert sorted(os.path.splitext(path)[1] for path in reads) == [".safetensors", ".zip"]
    del reads[:]
    for _ in range(3):
        assert _refresh(registry).available
    assert reads == []  # nothing re-read while the files are unchanged
    weights = model_package.resolve("remote", allow_download=False).weight_files[0]
    assert reads == []
    # a touched file (new mtime, same content) is read again and still accepted
    status = weights.stat()
    os.utime(str(weights), ns=(status.st_atime_ns, status.st_mtime_ns + 10 ** 9))
    assert _refresh(registry).available
    assert [os.path.realpath(path) for path in reads] == [os.path.realpath(str(weights))]


def test_a_tampered_file_is_hashed_again_and_refused(downloaded_model):
    registry, reads = downloaded_model
    assert _refresh(registry).available
    weights = model_package.resolve("remote", allow_download=False).weight_files[0]
    status = weights.stat()
    del reads[:]
    # the file system's clock is coarse (a few ms): let it move, so the rewrite gets a ctime of its own
    time.sleep(0.05)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size
    weights.write_bytes(bytes(data))
    os.utime(str(weights), ns=(status.st_atime_ns, status.st_mtime_ns))  # and the old mtime put back
    assert weights.stat().st_size == status.st_size and weights.stat().st_mtime_ns == status.st_mtime_ns
    choice = _refresh(registry)
    assert not choice.available  # the selector offers it for download again instead of using it
    assert [os.path.basename(p) for p in reads] == ["weights.safetensors"]
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        model_package.resolve("remote", allow_download=False)


def test_cache_key_is_the_resolved_file(tmp_path, monkeypatch):
    """Two paths to one file share an entry; a file put in its place (new inode) is read again."""
    monkeypatch.setattr(model_package, "_VERIFIED_SHA256", {})
    target = tmp_path / "weights.bin"
    target.write_bytes(b"a" * 1000)
    link = tmp_path / "link.bin"
    os.symlink(str(target), str(link))
    assert model_package.cached_sha256(link) == model_package.cached_sha256(target) == model_package.sha256_of(target)
    assert len(model_package._VERIFIED_SHA256) == 1
    replacement = tmp_path / "new.bin"
    replacement.write_bytes(b"b" * 1000)
    status = target.stat()
    os.utime(str(replacement), ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(str(replacement), str(target))
    assert model_package.cached_sha256(link) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(model_package._VERIFIED_SHA256) == 2

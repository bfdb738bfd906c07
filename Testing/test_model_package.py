"""Model packages: round trip, SHA-256 verification, zip, registry; no pickle anywhere."""

import json
import zipfile

import pytest

from conftest import random_package
from TACEResponseLib import model_package
from TACEResponseLib.errors import ModelError


def test_round_trip_builds_identical_network(tmp_path):
    import torch

    package = random_package(tmp_path / "pkg")
    assert package.card["weights"][0]["sha256"] == model_package.sha256_of(package.weight_files[0])
    reloaded = model_package.load_package(tmp_path / "pkg").build_networks()[0]
    again = model_package.load_package(tmp_path / "pkg").build_networks()[0]
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_checksum_mismatch_is_refused(tmp_path):
    package = random_package(tmp_path / "pkg")
    data = bytearray(package.weight_files[0].read_bytes())
    data[-1] ^= 0xFF
    package.weight_files[0].write_bytes(bytes(data))
    with pytest.raises(ModelError, match="SHA-256 mismatch"):
        model_package.load_package(tmp_path / "pkg")


def test_missing_card_and_bad_json(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        model_package.load_package(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        model_package.load_package(tmp_path / "bad")


def test_zip_package_loads_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))
    random_package(tmp_path / "pkg")
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "pkg").iterdir():
            z.write(f, "demo/" + f.name)
    first = model_package.load_package(archive)
    second = model_package.load_package(archive)
    assert first.folder == second.folder and first.folder.is_relative_to(tmp_path / "cache")
    assert first.sha256 == model_package.load_package(tmp_path / "pkg").sha256


def test_unsafe_zip_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("../escape/model.json", "{}")
    with pytest.raises(ModelError, match="unsafe path"):
        model_package.load_package(archive)


def test_write_refuses_existing_folder(tmp_path):
    random_package(tmp_path / "pkg")
    with pytest.raises(ModelError, match="not empty"):
        random_package(tmp_path / "pkg")


def test_registry_names_resolve_and_unknown_names_fail(tmp_path):
    entries = model_package.read_registry()
    assert any(e["name"] == model_package.DEFAULT_MODEL for e in entries)
    for entry in entries:
        assert ("path" in entry) != ("url" in entry)
        if "url" in entry:
            assert len(entry["sha256"]) == 64
    with pytest.raises(ModelError, match="no such model"):
        model_package.resolve("no-such-model")


def test_registry_download_checks_sha256(tmp_path, monkeypatch):
    """A registry entry by URL: downloaded once into the cache, refused when its hash differs."""
    monkeypatch.setenv("TACE_RESPONSE_CACHE", str(tmp_path / "cache"))
    random_package(tmp_path / "pkg")
    archive = tmp_path / "served.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in (tmp_path / "pkg").iterdir():
            z.write(f, f.name)
    registry = tmp_path / "models.json"
    good = {"name": "remote", "url": archive.as_uri(), "sha256": model_package.sha256_of(archive)}
    bad = dict(good, name="tampered", sha256="0" * 64)
    registry.write_text(json.dumps({"models": [good, bad]}))
    monkeypatch.setattr(model_package, "REGISTRY_PATH", registry)
    package = model_package.resolve("remote")
    assert package.name == "random-test"
    with pytest.raises(ModelError, match="does not match the registry"):
        model_package.resolve("tampered")
    assert not list((tmp_path / "cache" / "downloads").glob("*.partial"))


def test_weights_are_safetensors_not_pickle(tmp_path):
    package = random_package(tmp_path / "pkg")
    header = package.weight_files[0].read_bytes()[:8]
    assert int.from_bytes(header, "little") < 10_000_000  # safetensors: 8-byte header length, then JSON
    assert package.weight_files[0].read_bytes()[8:9] == b"{"

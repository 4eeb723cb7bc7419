"""TF Hub downloads land under $DETECTCROP_HOME/tfhub unless TFHUB_CACHE_DIR is set (served from this machine)."""

from __future__ import annotations

import functools
import http.server
import tarfile
import threading

import numpy as np
import tensorflow as tf

from detectcrop import environment
from detectcrop.detector import load_hub_model


class _Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return 2.0 * x


def _serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_hub_download_is_cached_under_detectcrop_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("DETECTCROP_HOME", str(home))
    monkeypatch.setenv(environment.TFHUB_CACHE_ENV, "placeholder")  # recorded, so the test's change is undone
    monkeypatch.delenv(environment.TFHUB_CACHE_ENV)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    model = tmp_path / "model"
    tf.saved_model.save(_Doubler(), str(model))
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "doubler.tar.gz", "w:gz") as tar:
        for path in model.iterdir():
            tar.add(path, arcname=path.name)
    server = _serve(served)
    try:
        loaded = load_hub_model(f"http://127.0.0.1:{server.server_port}/doubler.tar.gz", offline_alternative="-")
    finally:
        server.shutdown()
    np.testing.assert_allclose(loaded(tf.constant([1.5, -2.0])).numpy(), [3.0, -4.0])
    cached = [p for p in (home / "tfhub").iterdir() if (p / "saved_model.pb").is_file()]
    assert len(cached) == 1
    assert environment.tfhub_cache_dir() == home / "tfhub"


def test_the_users_tfhub_cache_dir_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTCROP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(environment.TFHUB_CACHE_ENV, str(tmp_path / "mine"))
    assert environment.use_tfhub_cache() == tmp_path / "mine"
    assert environment.tfhub_cache_dir() == tmp_path / "mine"

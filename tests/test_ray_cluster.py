"""A real two-node Ray cluster on 127.0.0.1, started with ``ray start`` in token mode as the README's recipe says:
build_crops and label (with annotated copies) through ``--ray-address`` write the local engine's outputs, odd files
included, a driver without the cluster's token is refused in one line, and killing the worker node's raylet mid-run
loses and doubles nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

from ray_testdata import csv_rows, odd_photos, tree  # noqa: E402

from detectcrop import cache, zoo  # noqa: E402
from detectcrop.dataset import build_crops  # noqa: E402
from pipelines import label as label_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A head and a worker node, each one ``ray start --block`` process with one CPU and its own ports; the token is
    the one ``ray get-auth-token --generate`` writes to ``~/.ray/auth_token`` (``HOME`` is a temporary folder)."""

    def __init__(self, root: Path) -> None:
        home = root / "home"
        home.mkdir()
        # the nodes and the drivers: token mode, this home's token; the model cache stays the session's
        self.env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token",
                    "DETECTCROP_HOME": str(cache.home_dir()), "PYTHONPATH": str(REPO)}
        for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS"):
            self.env.pop(var, None)
        subprocess.run([RAY, "get-auth-token", "--generate"], env=self.env, check=True, capture_output=True)
        self.token = home / ".ray" / "auth_token"
        port = _free_port()
        self.address = f"127.0.0.1:{port}"
        node = ["--block", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
        self.logs = root
        self.head = self._start("head", "--head", "--port", str(port), "--include-dashboard", "false",
                                "--ray-client-server-port", str(_free_port()), "--temp-dir", str(root / "ray"),
                                "--dashboard-agent-listen-port", str(_free_port()), *node)
        self._wait(f"from ray._raylet import GcsClient; GcsClient(address={self.address!r})")
        self.worker = self._start("worker", "--address", self.address,
                                  "--dashboard-agent-listen-port", str(_free_port()), *node)
        self.wait_nodes(2)

    def wait_nodes(self, alive: int) -> None:
        """Until the cluster counts ``alive`` live nodes."""
        self._wait(f"import ray; ray.init(address={self.address!r}, log_to_driver=False); "
                   f"assert sum(n['Alive'] for n in ray.nodes()) == {alive}")

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "wb") as log:
            return subprocess.Popen([RAY, "start", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _wait(self, code: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.head.poll() is not None:
                logs = {p.name: p.read_text(errors="replace")[-2000:] for p in self.logs.glob("*.log")}
                raise RuntimeError(f"the Ray cluster did not come up: {logs}")
            time.sleep(0.5)

    def raylet(self, node: subprocess.Popen) -> psutil.Process:
        (raylet,) = [p for p in psutil.Process(node.pid).children() if p.name() == "raylet"]
        return raylet

    def stop(self) -> None:
        """Kill both nodes by their process ids: each ``ray start`` process and everything it started."""
        procs = []
        for node in (self.worker, self.head):
            try:
                parent = psutil.Process(node.pid)
                procs += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=30)


@pytest.fixture(scope="module")
def cluster():
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))  # short: Ray's socket paths must fit in 107 bytes
    c = Cluster(root)
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return odd_photos(tmp_path_factory.mktemp("watches"), photos_per_brand=4, scenes=2, seed=5)


def _driver(cluster: Cluster, module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args, "--engine", "ray", "--ray-address",
                             cluster.address, "--no-progress"], cwd=REPO, env=env or cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_driver_without_the_clusters_token_is_refused_in_one_line(cluster, photos, tmp_path):
    without = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    other_home = tmp_path / "home"
    (other_home / ".ray").mkdir(parents=True)
    (other_home / ".ray" / "auth_token").write_text("0" * 64)
    for env, says in ((without, "set RAY_AUTH_MODE=token"), ({**cluster.env, "HOME": str(other_home)}, "differs")):
        proc = _driver(cluster, "pipelines.build_crops", "--input", str(photos), "--output", str(tmp_path / "o"),
                       "--detector", zoo.OFFLINE_DETECTOR, env=env)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ") and says in err, err
        assert not (tmp_path / "o").exists()  # refused before anything was written


def test_build_crops_on_the_cluster_writes_the_local_engines_bytes(cluster, photos, detector, tmp_path):
    local = tmp_path / "local"
    build_crops(photos, local, detector, category="clock")
    out = tmp_path / "cluster"
    # two actors of one CPU each: one on each node
    proc = _driver(cluster, "pipelines.build_crops", "--input", str(photos), "--output", str(out),
                   "--detector", zoo.OFFLINE_DETECTOR, "--actors", "2", "--batch-per-actor", "2")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert tree(out) == tree(local)


@pytest.fixture(scope="module")
def fitted_run(fitted, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    fitted[0].save(run / "model.keras")
    return run


def test_label_on_the_cluster_survives_losing_the_worker_node(cluster, photos, fitted_run, tmp_path):
    common = ["--input", str(photos), "--model", str(fitted_run), "--detector", zoo.OFFLINE_DETECTOR, "--annotate"]
    local, out = tmp_path / "local", tmp_path / "cluster"
    assert label_cli.main([*common, "--output", str(local), "--no-progress"]) == 0
    raylet = cluster.raylet(cluster.worker)
    proc = _driver(cluster, "pipelines.label", *common, "--output", str(out), "--actors", "1,2",
                   "--batch-per-actor", "1")
    deadline = time.monotonic() + 300
    predictions = out / "predictions.csv"
    while proc.poll() is None and time.monotonic() < deadline:
        if predictions.exists() and predictions.read_text(encoding="utf-8").count("\n") >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the worker node could be killed"
    raylet.kill()  # the worker node dies mid-run; its actor's batches go to the head node
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:  # a run that gave up keeps its rows: --resume finishes it, once Ray knows the node died
        cluster.wait_nodes(1)
        again = _driver(cluster, "pipelines.label", *common, "--output", str(out), "--resume")
        _, err = again.communicate(timeout=300)
        assert again.returncode == 0, err
    rows, reference = csv_rows(predictions), csv_rows(local / "predictions.csv")
    # nothing lost, nothing doubled: every file with as many rows (objects) as locally, and the same rows
    assert Counter(r["image"] for r in rows) == Counter(r["image"] for r in reference)
    assert sorted(map(str, rows)) == sorted(map(str, reference))
    coco = [json.loads((d / "results.coco.json").read_text()) for d in (local, out)]
    assert coco[0]["annotations"] == coco[1]["annotations"] and coco[0]["images"] == coco[1]["images"]
    assert tree(out / "annotated") == tree(local / "annotated")  # the actors' copies, written on either node

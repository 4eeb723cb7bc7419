"""Real clients read every export of a `label` run: supervision (the YOLO export and results.coco.json),
pycocotools and faster-coco-eval (AP of results.coco-gt.json against `detectcrop evaluate`'s), and a Label Studio
server on 127.0.0.1 (a project made with the exported label config imports labelstudio.json; every task, prediction
and region comes back as written, and each task's image is served).

    python -m bench.client_check --demo /tmp/demo --work /tmp/clients --json bench/client_check.json

``--demo`` is a finished ``python -m pipelines.demo --output DIR`` (run first when the folder is missing). Each client
lives in its own virtual environment under ``--work`` (none is a dependency of the project: supervision wants another
OpenCV than this project's, Label Studio a whole web stack); pycocotools is the project's own (``[eval]``). The
result lists every check with the numbers it compared and the versions checked; the exit status is 1 if one fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("bench.client_check")

#: What each client's environment installs. label-studio 1.23 breaks with sentry-sdk 3 (an option it passes was
#: removed) and does not bound it.
CLIENTS = {"supervision": ["supervision"], "faster_coco_eval": ["faster-coco-eval"],
           "label_studio": ["label-studio", "sentry-sdk<3"]}
PACKAGE = {"supervision": "supervision", "faster_coco_eval": "faster-coco-eval", "label_studio": "label-studio"}
IMAGE_URL = "/data/local-files/?d=scenes/"

SUPERVISION = """
import json, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
import supervision as sv
scenes, yolo, coco = sys.argv[1:4]
out = {}
for name, ds in (("yolo", sv.DetectionDataset.from_yolo(images_directory_path=scenes,
                                                        annotations_directory_path=f"{yolo}/labels",
                                                        data_yaml_path=f"{yolo}/data.yaml")),
                 ("coco", sv.DetectionDataset.from_coco(images_directory_path=scenes, annotations_path=coco))):
    # the annotations, not the images: iterating would decode each one (and stop at the damaged file)
    out[name] = {Path(path).name: {"xyxy": det.xyxy.tolist(), "labels": [ds.classes[int(c)] for c in det.class_id]}
                 for path, det in ds.annotations.items()}
print(json.dumps(out))
"""

COCO_EVAL = """
import contextlib, io, json, sys
gt_path, results_path, prefix, backend = sys.argv[1:5]
if backend == "pycocotools":
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval as Eval
else:
    from faster_coco_eval import COCO, COCOeval_faster as Eval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(gt_path)
    dt = gt.loadRes(results_path)
    ev = Eval(gt, dt, "bbox")
    ev.params.imgIds = sorted(i["id"] for i in gt.dataset["images"] if i["file_name"].startswith(prefix))
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
print(json.dumps([float(s) for s in ev.stats[:12]]))
"""


def client_python(work: Path, name: str) -> tuple[Path, str]:
    """The client's environment (created and installed once), and the version of its package."""
    venv = work / name
    py = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *CLIENTS[name]], check=True)
        (venv / ".installed").touch()
    version = subprocess.run([str(py), "-c", f"import importlib.metadata as m; print(m.version({PACKAGE[name]!r}))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return py, version


def run_json(py: Path | str, code: str, *args: str) -> Any:
    proc = subprocess.run([str(py), "-c", code, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def expected_objects(labels: Path) -> dict[str, dict[str, Any]]:
    """The readable images of predictions.csv: their pixel boxes and labels, by file name."""
    from pipelines.predictions import labeled_images, read_predictions

    return {Path(im.image).name: {"xyxy": im.detections.xyxy.astype(float), "labels": list(im.labels)}
            for im in labeled_images(read_predictions(labels)) if im.status != "error"}


def compare_boxes(expected: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Largest box difference in pixels, and whether images, object counts and labels agree."""
    worst, problems = 0.0, []
    for image, want in expected.items():
        have = got.get(image)
        if have is None:
            problems.append(f"{image}: missing")
            continue
        boxes = np.array(have["xyxy"], float).reshape(-1, 4)
        if len(boxes) != len(want["xyxy"]):
            problems.append(f"{image}: {len(boxes)} objects, not {len(want['xyxy'])}")
            continue
        order_w = np.lexsort(want["xyxy"].T[::-1])
        order_h = np.lexsort(boxes.T[::-1])
        if len(boxes):
            worst = max(worst, float(np.abs(boxes[order_h] - want["xyxy"][order_w]).max()))
        if [have["labels"][i] for i in order_h] != [want["labels"][i] for i in order_w]:
            problems.append(f"{image}: labels differ")
    extra = sorted(set(got) - set(expected))
    nonempty_extra = [i for i in extra if got[i]["xyxy"]]
    return {"images": len(expected), "objects": sum(len(w["labels"]) for w in expected.values()),
            "max_box_diff_px": round(worst, 4), "problems": problems + [f"{i}: objects for an unreadable file"
                                                                       for i in nonempty_extra],
            "ok": not problems and not nonempty_extra and worst <= 1.0}


def check_supervision(work: Path, demo: Path) -> dict[str, Any]:
    py, version = client_python(work, "supervision")
    labels = demo / "labels"
    got = run_json(py, SUPERVISION, str(demo / "watches" / "scenes"), str(labels / "yolo"),
                   str(labels / "results.coco.json"))
    expected = expected_objects(labels)
    return {"version": version, "from_yolo": compare_boxes(expected, got["yolo"]),
            "from_coco": compare_boxes(expected, got["coco"])}


def check_coco_eval(work: Path, demo: Path) -> dict[str, Any]:
    from pipelines.cli.evaluate import COCO_STATS

    labels = demo / "labels"
    reference = json.loads((labels / "evaluation.json").read_text())["coco"]
    out = {}
    for backend, py in (("pycocotools", sys.executable), ("faster_coco_eval", None)):
        version = None
        if py is None:
            py, version = client_python(work, "faster_coco_eval")
        else:
            import importlib.metadata

            version = importlib.metadata.version("pycocotools")
        stats = run_json(py, COCO_EVAL, str(demo / "watches" / "annotations.json"),
                         str(labels / "results.coco-gt.json"), "scenes/", backend)
        diffs = {name: abs(s - reference[name]) for name, s in zip(COCO_STATS, stats, strict=True)
                 if reference[name] is not None}
        missing = [name for name, s in zip(COCO_STATS, stats, strict=True) if reference[name] is None and s >= 0]
        out[backend] = {"version": version, "AP": round(stats[0], 6), "AP50": round(stats[1], 6),
                        "evaluate_AP": reference["AP"], "max_abs_diff": round(max(diffs.values()), 7),
                        "ok": max(diffs.values()) <= 1e-6 and not missing}
    return out


class LabelStudio:
    """A Label Studio server on 127.0.0.1 with its own data folder, serving the demo's photos as local files."""

    def __init__(self, work: Path, root: Path) -> None:
        self.py, self.version = client_python(work, "label_studio")
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.email, self.password = "check@example.com", secrets.token_hex(12)
        data = work / "label_studio_data"  # a new server each time: its user is made from the variables below
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "HOST"}  # LS reads HOST as its URL
        env.update(LABEL_STUDIO_USERNAME=self.email, LABEL_STUDIO_PASSWORD=self.password,
                   LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true", LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root),
                   LABEL_STUDIO_BASE_DATA_DIR=str(data))
        self.log = open(work / "label_studio.log", "wb")  # open while the server runs
        self.proc = subprocess.Popen([str(self.py.parent / "label-studio"), "start", "--no-browser", "--host",
                                      "127.0.0.1", "--port", str(self.port), "--data-dir", str(data)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/health", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Label Studio did not start: see {work / 'label_studio.log'}") from None
                time.sleep(1)
        self.access = self._access_token()

    def _access_token(self) -> str:
        """Log in, make a personal access token, trade it for an access token (Label Studio's JWT flow)."""
        import http.cookiejar

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(f"{self.base}/user/login/")
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode({"email": self.email, "password": self.password,
                                       "csrfmiddlewaretoken": csrf}).encode()
        opener.open(urllib.request.Request(f"{self.base}/user/login/", form, headers={"Referer": self.base}))
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        pat = json.load(opener.open(urllib.request.Request(f"{self.base}/api/token/", b"", method="POST", headers={
            "X-CSRFToken": csrf, "Referer": self.base})))["token"]
        return self.api("POST", "/api/token/refresh/", {"refresh": pat}, auth=False)["access"]

    def api(self, method: str, path: str, body: Any = None, auth: bool = True, raw: bool = False) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.access}"
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data, headers, method=method),
                                    timeout=120) as r:
            content = r.read()
        return content if raw else json.loads(content)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def check_label_studio(work: Path, demo: Path) -> dict[str, Any]:
    labels = demo / "labels"
    tasks = json.loads((labels / "labelstudio.json").read_text())
    config = (labels / "labelstudio.xml").read_text()
    server = LabelStudio(work, demo / "watches")
    try:
        project = server.api("POST", "/api/projects", {"title": "detectcrop client check", "label_config": config})
        server.api("POST", "/api/storages/localfiles", {"project": project["id"], "title": "scenes",
                                                        "path": str(demo / "watches" / "scenes")})
        # Label Studio's own reading of the config (it stores predictions without checking them against it)
        parsed = server.api("GET", f"/api/projects/{project['id']}")["parsed_label_config"]
        imported = server.api("POST", f"/api/projects/{project['id']}/import", tasks)
        back = server.api("GET", f"/api/projects/{project['id']}/export?exportType=JSON&download_all_tasks=true")
        predictions: dict[int, list[dict[str, Any]]] = {}
        for pred in server.api("GET", f"/api/predictions/?project={project['id']}"):
            predictions.setdefault(pred["task"], []).append(pred)
        served = []
        for task in back[:3]:  # the images behind the tasks' URLs
            content = server.api("GET", task["data"]["image"], raw=True)
            name = urllib.parse.unquote(task["data"]["image"].removeprefix(IMAGE_URL))
            served.append(content == (demo / "watches" / "scenes" / name).read_bytes())
    finally:
        server.stop()
    sent = {t["data"]["image"]: t["predictions"][0] for t in tasks}
    problems = []
    for task in back:
        want, preds = sent.get(task["data"]["image"]), predictions.get(task["id"], [])
        if want is None or len(preds) != 1:
            problems.append(f"{task['data']['image']}: {len(preds)} predictions")
            continue
        regions = [(r["value"], r["from_name"], r["to_name"], r["type"]) for r in preds[0]["result"]]
        for r in preds[0]["result"]:
            control = parsed.get(r["from_name"], {})
            if (control.get("type", "").lower() != r["type"] or r["to_name"] not in control.get("to_name", [])
                    or not set(r["value"]["rectanglelabels"]) <= set(control.get("labels", []))):
                problems.append(f"{task['data']['image']}: a region the label config does not hold: {r['value']}")
            inputs = {i["value"] for i in control.get("inputs", [])}
            if not inputs or not all(v in task["data"] for v in inputs):
                problems.append(f"{task['data']['image']}: the task lacks the config's input {inputs}")
        if regions != [(r["value"], r["from_name"], r["to_name"], r["type"]) for r in want["result"]]:
            problems.append(f"{task['data']['image']}: regions differ")
        if preds[0].get("model_version") != want["model_version"] or abs(preds[0]["score"] - want["score"]) > 1e-6:
            problems.append(f"{task['data']['image']}: model_version or score differ")
    n_regions = sum(len(t["predictions"][0]["result"]) for t in tasks)
    return {"version": server.version, "config_labels": len(parsed.get("label", {}).get("labels", [])),
            "tasks_sent": len(tasks), "tasks_imported": imported.get("task_count"),
            "predictions_imported": imported.get("prediction_count"), "regions_sent": n_regions,
            "regions_back": sum(len(p["result"]) for ps in predictions.values() for p in ps),
            "images_served": f"{sum(served)}/{len(served)}", "problems": problems,
            "ok": (not problems and len(back) == len(tasks) and imported.get("task_count") == len(tasks)
                   and all(served))}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export(demo: Path) -> None:
    from pipelines.cli import export as export_cli

    labels = demo / "labels"
    for args in (["--format", "yolo"], ["--format", "labelstudio", "--image-url", IMAGE_URL]):
        if export_cli.main(["--predictions", str(labels), *args]) != 0:
            raise RuntimeError(f"export {args} failed")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, default=Path("/tmp/demo"))
    p.add_argument("--work", type=Path, default=Path("/tmp/clients"))
    p.add_argument("--json", type=Path)
    p.add_argument("--clients", nargs="+", default=["supervision", "coco_eval", "label_studio"],
                   choices=["supervision", "coco_eval", "label_studio"])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.demo / "labels" / "evaluation.json").is_file():
        subprocess.run([sys.executable, "-m", "pipelines.cli.demo", "--output", str(args.demo)], check=True)
    export(args.demo)
    checks = {"supervision": check_supervision, "coco_eval": check_coco_eval, "label_studio": check_label_studio}
    result: dict[str, Any] = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, "
                              f"{os.cpu_count()} CPUs", "python": platform.python_version(),
                              "command": " ".join(["python -m bench.client_check", *(argv or sys.argv[1:])])}
    for name in args.clients:
        logger.info("checking %s", name)
        result[name] = checks[name](args.work, args.demo)
        logger.info("%s: %s", name, json.dumps(result[name]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    failed = [k for k in args.clients for v in _oks(result[k]) if not v]
    print(json.dumps(result, indent=1))
    if failed:
        raise SystemExit(f"failed: {sorted(set(failed))}")
    return result


def _oks(node: Any) -> list[bool]:
    if isinstance(node, dict):
        return ([node["ok"]] if "ok" in node else []) + [v for x in node.values() for v in _oks(x)]
    return []


if __name__ == "__main__":
    main()

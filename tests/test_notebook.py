"""The quickstart notebook runs top to bottom (on the offline presets)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # executes the whole notebook (trains)
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # photo, crops grid, confusion, scene
    text = "".join(o.get("text", "") for o in outputs)
    brands = ast.literal_eval(re.search(r"^(\[.*?\]) \d+ photos", text, re.M).group(1))
    accuracy = float(re.search(r"validation accuracy ([0-9.]+)", text).group(1))
    assert accuracy > 1.5 / len(brands)  # well above chance
    scenes = re.findall(r"^(scene_\d+\.jpg) (ok|no_detection|error) (\[.*\])$", text, re.M)
    assert len(scenes) == 4 and all(status != "error" for _, status, _ in scenes)
    labels = [label for _, _, found in scenes for label in ast.literal_eval(found)]
    assert labels and set(labels) <= {*brands, "unknown"}  # the pipeline labeled watches with known brands
    assert (tmp_path / "quickstart_out" / "run" / "model.keras").is_file()

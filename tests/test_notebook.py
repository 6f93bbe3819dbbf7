"""The tutorial notebook runs end to end in a real Jupyter kernel (nbclient) on CPU; a failing
cell fails the test. Its committed outputs come from the same run (``jupyter execute
--inplace projects/turbo/turbo_tutorial.ipynb``)."""

import os

import nbformat
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOK = os.path.join(ROOT, "projects", "turbo", "turbo_tutorial.ipynb")


def test_tutorial_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "TurboROIHeads" in text and "maskness" in text
    for name in ("baseline", "Turbo (published)", "Turbo (defaults)", "Turbo + opt-ins"):
        assert f"{name:>26}: box AP" in text
    # the side-by-side pictures, their close-ups and the refinement picture are in the outputs
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4


def test_committed_notebook_has_outputs():
    """The notebook reads well where it is browsed: it is committed executed, without errors."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("execution_count") for c in code)
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert not [o for o in outputs if o.output_type == "error"]

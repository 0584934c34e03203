"""The Colab notebooks run top to bottom in quick mode (TFSMOOTH_QUICK=1), each in its Keras flavour."""

from __future__ import annotations

import pathlib
import re

import nbformat
import pytest
from nbclient import NotebookClient

from tfsmooth import _keras

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _flavour(notebook) -> str:
    return notebook.metadata.get("tfsmooth", {}).get("keras", "keras3")


README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
README_FLAVOURS = {"Keras 3": "keras3", "tf-keras": "tf_keras"}


def test_every_notebook_is_listed_well_formed_and_has_a_quick_mode():
    """The README's notebook table and the notebooks on disk agree (names and Keras flavour); each
    is valid nbformat, opens with its title and its own Colab badge, reads TFSMOOTH_QUICK and has
    code to run; both flavours are covered."""
    rows = re.findall(r"^\| \[(\w+)\]\(notebooks/(\w+)\.ipynb\) \|.*\| ([\w -]+) \|$", README, re.M)
    listed = {
        stem: README_FLAVOURS[flavour.strip()] for name, stem, flavour in rows if name == stem
    }
    on_disk = {path.stem: _flavour(nbformat.read(path, as_version=4)) for path in NOTEBOOKS}
    assert on_disk and listed == on_disk, (listed, on_disk)
    assert set(on_disk.values()) == {"keras3", "tf_keras"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        first = notebook.cells[0]
        assert first.cell_type == "markdown" and first.source.startswith("# "), path.name
        assert (
            f"colab.research.google.com/github/tfsmooth/tfsmooth/blob/main/notebooks/{path.name}"
            in (first.source)
        ), path.name
        code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
        assert code and any("TFSMOOTH_QUICK" in source for source in code), path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    needs = _flavour(notebook)
    if needs != _keras.KERAS_FLAVOUR:
        pytest.skip(f"{path.name} runs under {needs} (this pass is {_keras.KERAS_FLAVOUR})")
    monkeypatch.setenv("TFSMOOTH_QUICK", "1")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors

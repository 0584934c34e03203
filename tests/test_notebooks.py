"""The Colab notebooks run top to bottom in quick mode (TFSMOOTH_QUICK=1), each in its Keras flavour."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

from tfsmooth import _keras

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _flavour(notebook) -> str:
    return notebook.metadata.get("tfsmooth", {}).get("keras", "keras3")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


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

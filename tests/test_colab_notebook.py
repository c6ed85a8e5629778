"""launch/colab_smoke.ipynb: committed clean, and executed headless (nbclient, CPU) at its reduced
size, its outputs hold the report's plots and the accuracy table."""

import base64
import json
import pathlib
import struct
import sys
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "launch" / "colab_smoke.ipynb"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = _read()
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and any(c.cell_type == "markdown" for c in nb.cells)
    for cell in code:
        assert cell.outputs == [], f"cell {cell.get('id')} is committed with outputs"
        assert cell.execution_count is None, f"cell {cell.get('id')} is committed with an execution count"
    params = nb.cells[_parameters_index(nb)]
    for name in ("PROJECT_DIR", "RUN_DIR", "ROUNDS", "BOOTSTRAP_STEPS", "FINETUNE_STEPS"):
        assert f"{name} =" in params.source


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_notebook_executes_headless(tmp_path, monkeypatch):
    from ipykernel.kernelspec import write_kernel_spec
    from nbclient import NotebookClient

    # The kernel is this interpreter: a python3 kernel spec naming sys.executable, found first.
    jupyter_path = tmp_path / "jupyter"
    write_kernel_spec(path=str(jupyter_path / "kernels" / "python3"))
    assert json.loads((jupyter_path / "kernels" / "python3" / "kernel.json").read_text())["argv"][0] == sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))

    nb = _read()
    run_dir = tmp_path / "run"
    injected = nbformat.v4.new_code_cell(f"RUN_DIR = {str(run_dir)!r}")  # PROJECT_DIR: found from launch/
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_index(nb) + 1, injected)

    client = NotebookClient(nb, kernel_name="python3", timeout=1200,
                            resources={"metadata": {"path": str(ROOT / "launch")}})
    start = time.monotonic()
    client.execute()
    print(f"notebook executed in {time.monotonic() - start:.0f} s")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, errors
    stream = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"project: {ROOT}\n" in stream
    assert f"already importable by {sys.executable}" in stream  # ran in this interpreter, installed nothing

    report = run_dir / "report"
    images = [base64.b64decode(o.data["image/png"]) for o in outputs
              if o.output_type == "display_data" and "image/png" in o.data]
    for name in ("accuracy.png", "overlap.png"):
        assert (report / name).read_bytes() in images, f"report/{name} is not shown inline"
    for data in images:
        width, height = _png_size(data)
        assert width > 0 and height > 0

    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["rounds"]) == 2  # round 0 (the base model) and one MMST round
    tables = [o.data["text/html"] for o in outputs
              if o.output_type == "display_data" and "<table" in o.data.get("text/html", "")]
    assert len(tables) == 1, "the accuracy table is not shown"
    for r in metrics["rounds"]:
        for dataset, by_method in r["eval"].items():
            assert f"<td>{dataset}</td>" in tables[0]
            for method, m in by_method.items():
                assert f"<th>round {r['round']} {method}</th>" in tables[0]
                assert f"<td>{100 * m['accuracy']:.1f}</td>" in tables[0]

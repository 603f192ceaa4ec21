"""Every script in examples/ runs with --small (in-process, so compiled functions are shared)
and leaves the registry as it found it."""

import importlib.util
import inspect
from pathlib import Path

import matplotlib
import pytest

from bayesmtl import methods

matplotlib.use("Agg")
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.py"))


def test_every_example_is_listed():
    assert {p.stem for p in EXAMPLES} >= {"quickstart", "family_comparison",
                                          "amtl_transfer_graph", "gamtl_groups",
                                          "user_defined_prior"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs_small(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # figures land in the temporary folder
    before = set(methods.names())
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        kwargs = {"small": True}
        if "out" in inspect.signature(module.main).parameters:
            kwargs["out"] = str(tmp_path / "figure.png")
        assert module.main(**kwargs) is not None
        if "out" in kwargs:
            assert (tmp_path / "figure.png").stat().st_size > 1000
    finally:
        for name in set(methods.names()) - before:
            methods.unregister(name)

"""The README's Python code runs as written (its blocks in order, one namespace)."""

import re
from pathlib import Path

from bayesmtl import methods

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files the README writes (l2mt.pt, …) land here
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    before = set(methods.names())
    namespace = {}
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    finally:
        for name in set(methods.names()) - before:
            methods.unregister(name)
    assert namespace["post"].idata_.posterior["omega_corr"].dims[-2:] == ("task", "task_")
    assert namespace["est"].omega_.shape == (10, 10)

"""The Python blocks of the user docs (docs/*.md) run as written, each file top to
bottom in one namespace, as a reader pasting them would (README.md has its own test)."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
WITH_CODE = sorted(p.name for p in DOCS.glob("*.md") if "```python" in p.read_text())


@pytest.mark.parametrize("name", WITH_CODE)
def test_doc_blocks_run(name):
    path = DOCS / name
    text = path.read_text(encoding="utf-8")
    namespace = {"__name__": "__main__"}
    for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        first_line = text.count("\n", 0, m.start(1)) + 1
        # compiled with the doc's name and its own line numbers, so a failure points there
        exec(compile("\n" * (first_line - 1) + m.group(1), str(path), "exec"), namespace)


def test_tracing_is_documented():
    assert "TRACING.md" in WITH_CODE

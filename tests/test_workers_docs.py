"""docs/workers.md: every example runs and prints what the page says; every public
function of papy.workers is documented there."""
import doctest
import importlib
import os
import re
import tempfile

import pytest

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "workers.md")
MODULES = ["core", "maths", "io", "streams", "transfer", "script"]


def test_the_examples_of_the_page_run(tmp_path, monkeypatch):
    # what the examples make with tempfile goes with the test's own folder
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = doctest.testfile(DOC, module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 30 and result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_is_on_the_page(name):
    with open(DOC) as handle:
        page = handle.read()
    module = importlib.import_module(f"papy.workers.{name}")
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if callable(value) and not attribute.endswith("star") and attribute != "fmodr":
            assert re.search(rf"\b{attribute}\b", page), f"{name}.{attribute}"

"""The examples in the docstrings of papy.workers modules run and give what they say."""
import doctest
import importlib

import pytest

MODULES = ["core", "maths", "streams", "transfer", "script"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"papy.workers.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_every_public_function_has_an_example(name):
    module = importlib.import_module(f"papy.workers.{name}")
    for attribute in module.__all__:
        value = getattr(module, attribute)
        if callable(value) and not isinstance(value, type) and attribute != "fmodr":
            doc = value.__doc__ or ""
            assert ">>> " in doc, f"{name}.{attribute}"

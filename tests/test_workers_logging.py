"""The workers library logs under its module names, below the "papy" logger.

So ``logging.getLogger("papy")`` settings (and papy.start_logger) still apply to every
worker module, and one module can be made quieter or louder by its own name.
"""
from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

import papy.workers

MODULES = sorted(info.name for info in pkgutil.iter_modules(papy.workers.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_a_worker_module_logs_under_its_own_name(name: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    module = importlib.import_module(f"papy.workers.{name}")
    loggers = [value for value in vars(module).values() if isinstance(value, logging.Logger)]
    assert all(logger.name == module.__name__ for logger in loggers), loggers
    for logger in loggers:
        with caplog.at_level(logging.INFO, logger="papy"):
            logger.info("heard by the papy logger")
        assert [record.name for record in caplog.records] == [module.__name__]
        caplog.clear()


def test_the_modules_that_log_are_found() -> None:
    logging_modules = {name for name in MODULES if any(
        isinstance(value, logging.Logger)
        for value in vars(importlib.import_module(f"papy.workers.{name}")).values())}
    assert {"_follow", "_transfer_janitor", "_transfer_local", "_transfer_tcp"} <= \
        logging_modules

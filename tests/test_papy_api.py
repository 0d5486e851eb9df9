"""The public surface of papy: names, exception tree, logging, the papy -> imap direction."""
import logging
import pathlib
import re
import subprocess
import sys

import papy
from papy import (Dagger, DaggerError, IMap, PapyError, Piper, PiperError, Plumber,
                  PlumberError, Worker, WorkerError, imports, workers)

PACKAGE = pathlib.Path(papy.__file__).parent
EXPECTED = {"Worker", "Piper", "Dagger", "Plumber", "IMap", "imports", "workers", "PapyError",
            "WorkerError", "PiperError", "DaggerError", "PlumberError", "Cache", "fingerprint",
            "Multiple", "Args", "Reducer", "Frame"}


def test_all_is_exactly_the_public_api():
    assert set(papy.__all__) == EXPECTED and len(papy.__all__) == len(EXPECTED)
    namespace = {}
    exec("from papy import *", namespace)
    assert set(namespace) - {"__builtins__"} == EXPECTED


def test_reexports():
    import imap
    assert IMap is imap.IMap and imports is imap.imports
    assert workers.io.print_ and workers.io.load_file
    assert all(isinstance(cls, type) for cls in (Worker, Piper, Dagger, Plumber))


def test_exception_tree():
    for error in (WorkerError, PiperError, DaggerError, PlumberError):
        assert issubclass(error, PapyError)
    assert issubclass(PapyError, Exception)


def test_library_logs_only_to_a_null_handler():
    handlers = logging.getLogger("papy").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
    assert not [h for h in handlers if not isinstance(h, logging.NullHandler)
                and not getattr(h, "_papy_start_logger", False)]


def test_start_logger_to_a_file_and_back(tmp_path):
    filename = tmp_path / "papy.log"
    installed = papy.start_logger(log_to_stream=False, log_to_file=True, filename=filename,
                                  level="DEBUG")
    try:
        logging.getLogger("papy").info("hello from papy")
        logging.getLogger("imap").warning("hello from imap")
        again = papy.start_logger(log_to_stream=False, log_to_file=True, filename=filename,
                                  level="DEBUG")    # replaces, does not duplicate
        logging.getLogger("papy").info("once")
    finally:
        for name in ("papy", "imap"):
            logger = logging.getLogger(name)
            for handler in installed + again:
                logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
        for handler in installed + again:
            handler.close()
    text = filename.read_text()
    assert "[papy]" in text and "hello from papy" in text and "[imap]" in text
    assert text.count("once") == 1


def test_papy_uses_only_the_public_api_of_imap():
    for source in PACKAGE.rglob("*.py"):
        for line in source.read_text().splitlines():
            # imap's private modules are _x; imap.server (the launcher) is public
            assert not re.match(r"\s*(from|import)\s+imap\.(_|backends)", line), (source, line)


def test_imap_never_imports_papy():
    code = ("import sys, imap; "
            "bad = [m for m in sys.modules if m == 'papy' or m.startswith('papy.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=PACKAGE.parent)

"""The ``papy`` command: make, run and draw pipelines, serve remote workers.

    papy new NAME [--template grep]     write NAME.py from a template, ready to edit
    papy run FILE [ARGS...]             run a pipeline module, show progress, print a summary
    papy run --dask ADDRESS FILE [ARGS...]   ... with every IMap on a Dask cluster
    papy graph FILE [--format dot|mermaid] [--png OUT]
    papy serve [imap-server options]    an RPyC server for remote IMap workers

Exit codes (``EXIT_*``): 0 ok (or the output was closed early: ``| head``); 1 the pipeline
failed; 2 usage error (bad options, a FILE that cannot be loaded or has nothing to run, a
file that exists); 3 some items failed (they are reported on stderr); 130 stopped by Ctrl-C
(143 by SIGTERM), after a graceful stop.

This module parses the command line and dispatches; the work is done by the library:
``papy._loading`` (the pipeline module: ``main(argv)``, or ``pipeline()`` and ``inputs()``),
``papy._runner`` (``run_plumber``: progress, summary, failed items, signals, exit codes) and
``papy._graph`` (DOT and Mermaid text). The names below stay importable from ``papy.cli``.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from ._errors import PapyError
from ._graph import graph_text
from ._loading import UsageError, build_plumber, load_module, open_inputs
from ._progress import Progress, summary
from ._runner import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK,
                      EXIT_TERMINATED, EXIT_USAGE, add_run_options, run_options, run_plumber)

__all__ = ["main", "run_plumber", "add_run_options", "run_options", "summary", "Progress",
           "load_module", "build_plumber", "graph_text", "UsageError", "TEMPLATES_DIR",
           "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_ITEMS_FAILED", "EXIT_INTERRUPTED",
           "EXIT_TERMINATED"]

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"  # package data (papy.templates)


# -- sub-commands -----------------------------------------------------------------------

def _template_names() -> list[str]:
    if not TEMPLATES_DIR.is_dir():
        return []
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.py") if not p.stem.startswith("_"))


def _cmd_new(args: argparse.Namespace) -> int:
    names = _template_names()
    if not names:
        raise UsageError(f"no templates found in {str(TEMPLATES_DIR)!r}: the papy "
                         f"installation is incomplete (reinstall papy)")
    if args.list:
        for name in names:
            print(name)
        return EXIT_OK
    if args.name is None:
        raise UsageError("papy new needs a NAME (or --list)")
    if args.template not in names:
        raise UsageError(f"no template {args.template!r}; choose one of {', '.join(names)}")
    target = Path(args.name if args.name.endswith(".py") else args.name + ".py")
    if target.exists() and not args.force:
        raise UsageError(f"{str(target)!r} exists; choose another NAME or add --force")
    if not target.parent.is_dir():
        raise UsageError(f"no such folder: {str(target.parent)!r}")
    text = (TEMPLATES_DIR / f"{args.template}.py").read_text(encoding="utf-8")
    header = (f"# {target.name}: a papy pipeline made by 'papy new' from the "
              f"{args.template!r} template; edit freely.\n")
    target.write_text(header + text, encoding="utf-8")
    print(f"wrote {target} (template {args.template}); run it with: "
          f"python -m papy run {target}")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    if args.dask is None:
        return _run_module(args)
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError("--dask needs Dask's distributed package: pip install "
                         "'papy[dask]'") from None
    from imap import override_workers
    with override_workers("dask", args.dask):
        return _run_module(args)


def _run_module(args: argparse.Namespace) -> int:
    module = load_module(args.file)
    main_function = getattr(module, "main", None)
    if callable(main_function):
        status = main_function(list(args.args))
        return EXIT_OK if status is None else int(status)
    parser = add_run_options(argparse.ArgumentParser(
        prog=f"papy run {args.file}", description="Run the pipeline() of a module that has no "
        "main(); its inputs come from --input files or from the module's inputs()."))
    parser.add_argument("--input", action="append", default=[], metavar="PATH",
                        help="a text file whose lines feed the next input Piper ('-': stdin); "
                             "repeat for several inputs")
    options = parser.parse_args(args.args)
    plumber = build_plumber(module)
    opened: list[Any] = []
    try:
        if options.input:
            datas = open_inputs(options.input, opened)
        elif callable(getattr(module, "inputs", None)):
            datas = list(module.inputs())
        else:
            raise UsageError(f"{args.file!r} has no main() and no inputs(); give its inputs "
                             f"with --input PATH (one per input Piper)")
        return run_plumber(plumber, datas, **run_options(options))
    finally:
        for handle in opened:
            handle.close()


def _cmd_graph(args: argparse.Namespace) -> int:
    plumber = build_plumber(load_module(args.file))
    text = graph_text(plumber, args.format)
    sys.stdout.write(text)
    if args.png:
        dot = shutil.which("dot")
        if dot is None:
            raise UsageError("--png needs Graphviz's 'dot' program, which is not installed "
                             "(e.g. apt install graphviz); the DOT text above can be drawn "
                             "elsewhere")
        source = text if args.format == "dot" else graph_text(plumber, "dot")
        done = subprocess.run([dot, "-Tpng", "-o", args.png], input=source, text=True,
                              capture_output=True)
        if done.returncode != 0:
            raise UsageError(f"dot could not draw the graph: {done.stderr.strip()}")
        print(f"wrote {args.png}", file=sys.stderr)
    return EXIT_OK


def _serve(argv: list[str]) -> int:
    from imap.server import main as serve
    try:
        return serve(argv)
    except SystemExit as exc:              # its argparse: --help or a usage error
        return _exit_code(exc.code)


def _cmd_serve(args: argparse.Namespace) -> int:
    return _serve(list(args.args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="papy", description="papy: parallel pipelines for Python. Exit codes: 0 ok, 1 the "
        "pipeline failed, 2 usage error, 3 some items failed, 130 interrupted (143: SIGTERM).")
    parser.add_argument("--version", action="version", version=f"papy {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    new = commands.add_parser("new", help="write a new pipeline file from a template",
                              description="Write NAME.py from a template, ready to edit.")
    new.add_argument("name", nargs="?", metavar="NAME", help="file to write (.py added)")
    new.add_argument("--template", default="grep", metavar="TEMPLATE",
                     help=f"one of: {', '.join(_template_names()) or '(none found)'} "
                          f"(default grep)")
    new.add_argument("--force", action="store_true", help="overwrite NAME.py if it exists")
    new.add_argument("--list", action="store_true", help="list the templates and exit")
    new.set_defaults(handler=_cmd_new)

    run = commands.add_parser(
        "run", help="run a pipeline module",
        description="Run a pipeline module: its main(ARGS) if it has one, else its pipeline() "
                    "on --input files or its inputs(), with progress and a final summary "
                    "(ARGS then take --input, --progress, --interval, --quiet, --fail-fast, "
                    "-v).")
    run.add_argument("--dask", metavar="ADDRESS",
                     help="run every IMap the module makes (its parallel Pipers) on the Dask "
                          "cluster of this scheduler (e.g. tcp://host:8786), with as many "
                          "workers as the cluster has threads; needs pip install 'papy[dask]'")
    run.add_argument("file", metavar="FILE", help="a Python file (e.g. papy/templates/grep.py)")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                     help="arguments for the module (see FILE's --help)")
    run.set_defaults(handler=_cmd_run)

    graph = commands.add_parser(
        "graph", help="print the pipeline's graph (Graphviz DOT or Mermaid)",
        description="Print the DAG that FILE's pipeline() builds, without running it.")
    graph.add_argument("file", metavar="FILE", help="a Python file with a pipeline()")
    graph.add_argument("--format", choices=("dot", "mermaid"), default="dot",
                       help="text format (default dot)")
    graph.add_argument("--png", metavar="OUT.png",
                       help="also draw a PNG with Graphviz's dot (when it is installed)")
    graph.set_defaults(handler=_cmd_graph)

    serve = commands.add_parser(
        "serve", add_help=False, help="run the remote worker server (same as imap-server)",
        description="Same as imap-server; 'papy serve --help' shows its options.")
    serve.add_argument("args", nargs=argparse.REMAINDER)
    serve.set_defaults(handler=_cmd_serve)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("papy")
    except Exception:  # noqa: BLE001 - not installed: running from a checkout
        return "(not installed)"


def _exit_code(code: Any) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """The ``papy`` command; returns the exit code (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:              # every option, --help included, is the server's
        return _exit_code(_serve(argv[1:]))
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:              # --help (0) or a usage error (2)
        return _exit_code(exc.code)
    try:
        code: int = args.handler(args)
        return code
    except UsageError as exc:
        print(f"papy {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:              # the module's own argparse, or sys.exit()
        return _exit_code(exc.code)
    except KeyboardInterrupt:
        print("papy: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PapyError as exc:
        print(f"papy {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception:  # noqa: BLE001 - a bug in the pipeline module: show it, exit 1
        traceback.print_exc()
        return EXIT_FAILED


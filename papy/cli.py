"""The ``papy`` command: make, run and draw pipelines, serve remote workers.

    papy new NAME [--template grep]     write NAME.py from a template, ready to edit
    papy run FILE [ARGS...]             run a pipeline module, show progress, print a summary
    papy run --dask ADDRESS FILE [ARGS...]   ... with every IMap on a Dask cluster
    papy graph FILE [--format dot|mermaid] [--png OUT]
    papy serve [imap-server options]    an RPyC server for remote IMap workers

Exit codes (``EXIT_*``): 0 ok; 1 the pipeline failed or some items failed; 2 usage error (bad
options, a FILE that cannot be loaded or has nothing to run, a file that exists); 130 stopped
by Ctrl-C (143 by SIGTERM), after a graceful stop.

A pipeline module for ``papy run`` has a ``main(argv)`` (called with ARGS; it returns the exit
code), or a ``pipeline()`` returning a Plumber (or the ``(pipers, xtras, pipes)`` of a module
written by ``Plumber.save``) and, optionally, ``inputs()`` returning one iterable per input
Piper. Pipeline scripts use ``add_run_options`` and ``run_plumber`` to behave like
``papy run`` themselves (see papy/templates/).

The module is loaded under a private name that is not left in ``sys.modules``, so its
functions travel to worker processes and hosts by value, as those of a ``__main__`` script.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import shutil
import signal
import subprocess
import sys
import threading
import traceback
from pathlib import Path

from ._errors import PapyError
from ._plumber import Plumber, PlumberState
from ._progress import MODES, Progress, count_errors, expected_totals, summary

__all__ = ["main", "run_plumber", "add_run_options", "run_options", "summary", "Progress",
           "load_module", "build_plumber", "graph_text", "UsageError", "TEMPLATES_DIR",
           "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "EXIT_TERMINATED"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"  # package data (papy.templates)
_loaded = itertools.count()


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (graceful stop) but with exit code 143."""


# -- running a Plumber ------------------------------------------------------------------

def add_run_options(parser: argparse.ArgumentParser,
                    progress: str = "auto") -> argparse.ArgumentParser:
    """Add ``--progress``, ``--interval`` and ``--quiet`` (read by ``run_options``).

    ``progress`` is the default mode: pipelines that print every item to the terminal
    choose ``'log'``, whose whole lines do not garble with theirs as a redrawn bar would."""
    group = parser.add_argument_group("running")
    group.add_argument("--progress", choices=MODES, default=progress,
                       help=f"live progress: a bar per output Piper (bar), periodic lines "
                            f"(log), bar on a terminal and log otherwise (auto), or none "
                            f"(off); default {progress}")
    group.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                       help="seconds between progress updates (default 0.2 for bars, 10 "
                            "for log lines)")
    group.add_argument("--quiet", action="store_true",
                       help="no progress and no summary (errors are still reported)")
    return parser


def run_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``run_plumber`` from options added by ``add_run_options``."""
    return {"progress": "off" if args.quiet else args.progress, "interval": args.interval,
            "show_summary": not args.quiet}


def run_plumber(plumber: Plumber, datas, progress: str = "auto", interval: float | None = None,
                show_summary: bool = True, stream=None) -> int:
    """Run ``plumber`` on ``datas`` to the end and return an exit code.

    start, run, wait, pause, stop; meanwhile a ``Progress`` display (``progress`` mode) on
    ``stream`` (default stderr), at the end the summary. Ctrl-C (or SIGTERM, in the main
    thread) stops gracefully with ``chinkup()``: every item already taken from an input
    reaches the outputs; a second Ctrl-C abandons that. Returns ``EXIT_OK``,
    ``EXIT_FAILED`` (a failure of the run, or error items), ``EXIT_INTERRUPTED`` or
    ``EXIT_TERMINATED``.

    Example::

        >>> status = run_plumber(pipeline(), [range(100)], progress="off")
    """
    stream = stream if stream is not None else sys.stderr
    datas = list(datas)
    status = EXIT_OK
    try:
        plumber.start(datas)
    except Exception as exc:  # noqa: BLE001 - reported with its cause, exit code 1
        _report(stream, "the pipeline could not start", exc)
        return EXIT_FAILED
    display = Progress(plumber, progress, stream, interval, expected_totals(plumber, datas))
    with _sigterm_as_interrupt():
        try:
            display.start()
            plumber.run()
            plumber.wait()
            plumber.pause()
            plumber.stop()
        except KeyboardInterrupt as exc:
            display.stop()
            status = EXIT_TERMINATED if isinstance(exc, _Terminated) else EXIT_INTERRUPTED
            stream.write("\npapy: interrupted: stopping gracefully (the items already taken "
                         "are finished; Ctrl-C again to abandon them)\n")
            _shutdown(plumber, stream)
        except Exception as exc:  # noqa: BLE001 - failures of the run: exit code 1
            display.stop()
            _report(stream, "the pipeline failed", exc)
            status = EXIT_FAILED
            _shutdown(plumber, stream)
        finally:
            display.stop()
    if display.error is not None:
        stream.write(f"papy: warning: the progress display failed: {display.error}\n")
    if show_summary:
        stream.write(summary(plumber) + "\n")
        stream.flush()
    errors = count_errors(plumber)
    if status == EXIT_OK and errors:
        stream.write(f"papy: some items failed ({errors} error items counted over the Pipers; "
                     f"they are logged under 'papy', see papy.start_logger)\n")
        status = EXIT_FAILED
    return status


def _shutdown(plumber: Plumber, stream) -> None:
    """Stop whatever is running after an error or an interrupt; report what that raised."""
    try:
        if plumber.state in (PlumberState.STARTED, PlumberState.RUNNING,
                             PlumberState.FINISHED, PlumberState.PAUSED):
            plumber.chinkup()
    except KeyboardInterrupt:
        stream.write("papy: interrupted again: stopped without finishing the items in "
                     "flight (the pools are stopped at exit)\n")
    except Exception as exc:  # noqa: BLE001 - the exit code already says it failed
        _report(stream, "the pipeline failed while stopping", exc)


def _report(stream, what: str, exc: BaseException) -> None:
    stream.write(f"papy: {what}: {type(exc).__name__}: {exc}\n")
    for note in getattr(exc, "__notes__", ()):
        stream.write(f"  {note}\n")
    if isinstance(exc, ExceptionGroup):
        for inner in exc.exceptions:
            stream.write(f"  - {type(inner).__name__}: {inner}\n")
    stream.flush()


class _sigterm_as_interrupt:
    """In the main thread: SIGTERM raises ``_Terminated`` (a KeyboardInterrupt)."""

    def __enter__(self):
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise _Terminated()

    def __exit__(self, *exc_info):
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous if self.previous is not None
                          else signal.SIG_DFL)


# -- loading pipeline modules -----------------------------------------------------------

def load_module(path):
    """Run the Python file ``path`` as a module and return it (``UsageError`` if it cannot).

    Like ``python FILE``: its folder goes first on ``sys.path``; its ``__name__`` is not
    ``'__main__'``, so its ``if __name__ == '__main__':`` block does not run.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    if path.suffix != ".py":
        raise UsageError(f"{str(path)!r} is not a Python file (.py)")
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    name = f"papy_run_{stem}_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module          # while it runs only (dataclasses, typing look here)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise UsageError(f"cannot load {str(path)!r}:\n{detail}") from exc
    finally:
        sys.modules.pop(name, None)     # functions then travel by value to worker processes
    return module


def build_plumber(module) -> Plumber:
    """The Plumber of a module's ``pipeline()`` (called without arguments)."""
    make = getattr(module, "pipeline", None)
    if not callable(make):
        raise UsageError(f"{module.__file__!r} has no pipeline() function (and no main()); "
                         f"see docs/cli.md for what papy run expects")
    try:
        made = make()
    except TypeError as exc:
        raise UsageError(f"pipeline() of {module.__file__!r} cannot be called without "
                         f"arguments: {exc}; give its parameters defaults") from exc
    if isinstance(made, Plumber):
        return made
    if isinstance(made, tuple) and len(made) == 3:          # a module written by save()
        pipers, xtras, pipes = made
        return Plumber(pipers=pipers, pipes=pipes, xtras=xtras)
    raise UsageError(f"pipeline() of {module.__file__!r} returned {type(made).__name__}; "
                     f"it must return a Plumber (or the (pipers, xtras, pipes) of save())")


def _open_inputs(paths, stack) -> list:
    from .workers.io import load_file
    handles = []
    for path in paths:
        if path == "-":
            handles.append(load_file(sys.stdin))
            continue
        try:
            handle = open(path, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input {path!r}: {exc.strerror}") from exc
        stack.append(handle)
        handles.append(load_file(handle))
    return handles


# -- graphs -----------------------------------------------------------------------------

def _graph_model(plumber):
    """(nodes, groups, edges, inputs): ids and label lines of the Pipers, (IMap, member
    ids) per IMap, (up, down, label) per pipe, and the ids of the input Pipers."""
    order = plumber.postorder()
    ids = {id(p): f"p{k}" for k, p in enumerate(order)}
    nodes, groups = [], {}
    for piper in order:
        lines = [piper.name, f"{piper.worker.__name__}()"]
        shape = [f"{key}={getattr(piper, key)}" for key in ("consume", "spawn", "produce")
                 if getattr(piper, key) != 1]
        if shape:
            lines.append(" ".join(shape))
        if piper.parallel is False:
            lines.append("linear")
        else:
            imap = piper.parallel
            groups.setdefault(id(imap), (imap, []))[1].append(ids[id(piper)])
        nodes.append((ids[id(piper)], lines))
    edges = []                          # (up, down, label): joins name their inbox slots
    for piper in order:
        ups = plumber.get_upstream(piper)
        edges += [(ids[id(up)], ids[id(piper)], f"inbox[{k}]" if len(ups) > 1 else "")
                  for k, up in enumerate(ups)]
    inputs = [ids[id(p)] for p in plumber.get_inputs()]
    return nodes, list(groups.values()), edges, inputs


def _imap_label(imap) -> str:
    if imap.worker_type == "dask":
        where = getattr(imap.worker_remote, "scheduler_address", None) or imap.worker_remote
        return f"IMap {imap.name}: {imap.worker_num} Dask threads" + (
            f" at {where}" if isinstance(where, str) else "")
    kind = {"process": "processes", "thread": "threads"}.get(imap.worker_type,
                                                              imap.worker_type)
    workers = [f"{imap.worker_num} {kind}"] if imap.worker_num else []
    workers += [f"{n} on {host}:{port}" for host, port, n in imap.worker_remote or []]
    return f"IMap {imap.name}: " + ", ".join(workers)


def _dot(plumber) -> str:
    nodes, groups, edges, inputs = _graph_model(plumber)
    q = _dot_quote
    out = ["digraph papy {", "  rankdir=TB;",
           '  node [shape=box, style="rounded", fontname="Helvetica"];']
    for k, node_id in enumerate(inputs):
        out.append(f'  in{k} [shape=plaintext, label={q(f"input {k}")}];')
    for node_id, lines in nodes:
        out.append(f"  {node_id} [label={q(chr(10).join(lines))}];")
    for k, (imap, members) in enumerate(groups):
        out.append(f"  subgraph cluster_{k} {{")
        out.append(f'    label={q(_imap_label(imap))}; style="dashed";')
        out.append(f"    {'; '.join(members)};")
        out.append("  }")
    out += [f"  in{k} -> {node_id};" for k, node_id in enumerate(inputs)]
    out += [f"  {a} -> {b}" + (f" [label={q(label)}]" if label else "") + ";"
            for a, b, label in edges]
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_quote(text: str) -> str:
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _mermaid(plumber) -> str:
    nodes, groups, edges, inputs = _graph_model(plumber)
    q = _mermaid_quote
    labels = dict(nodes)
    grouped = {m for _, members in groups for m in members}
    out = ["flowchart TD"]
    for k, node_id in enumerate(inputs):
        out.append(f"  in{k}([{q(f'input {k}')}])")
    for node_id, lines in nodes:
        if node_id not in grouped:
            out.append(f"  {node_id}[{q('<br/>'.join(lines))}]")
    for k, (imap, members) in enumerate(groups):
        out.append(f"  subgraph imap{k} [{q(_imap_label(imap))}]")
        out += [f"    {m}[{q('<br/>'.join(labels[m]))}]" for m in members]
        out.append("  end")
    out += [f"  in{k} --> {node_id}" for k, node_id in enumerate(inputs)]
    out += [f"  {a} -->" + (f"|{q(label)}|" if label else "") + f" {b}"
            for a, b, label in edges]
    return "\n".join(out) + "\n"


def _mermaid_quote(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def graph_text(plumber, fmt: str = "dot") -> str:
    """The DAG of ``plumber`` as Graphviz DOT (``fmt='dot'``) or Mermaid text."""
    if fmt == "dot":
        return _dot(plumber)
    if fmt == "mermaid":
        return _mermaid(plumber)
    raise ValueError(f"graph format must be 'dot' or 'mermaid', not {fmt!r}")


# -- sub-commands -----------------------------------------------------------------------

def _template_names() -> list[str]:
    if not TEMPLATES_DIR.is_dir():
        return []
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.py") if not p.stem.startswith("_"))


def _cmd_new(args) -> int:
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


def _cmd_run(args) -> int:
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


def _run_module(args) -> int:
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
    opened: list = []
    try:
        if options.input:
            datas = _open_inputs(options.input, opened)
        elif callable(getattr(module, "inputs", None)):
            datas = list(module.inputs())
        else:
            raise UsageError(f"{args.file!r} has no main() and no inputs(); give its inputs "
                             f"with --input PATH (one per input Piper)")
        return run_plumber(plumber, datas, **run_options(options))
    finally:
        for handle in opened:
            handle.close()


def _cmd_graph(args) -> int:
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


def _cmd_serve(args) -> int:
    return _serve(list(args.args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="papy", description="papy: parallel pipelines for Python. Exit codes: 0 ok, 1 the "
        "pipeline failed or items failed, 2 usage error, 130 interrupted (143: SIGTERM).")
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
                    "(ARGS then take --input, --progress, --interval, --quiet).")
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


def _exit_code(code) -> int:
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
        return args.handler(args)
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


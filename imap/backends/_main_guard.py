"""The ``if __name__ == "__main__":`` guard: found missing before any worker starts, and
refused inside a worker that imports the main module again.

A script that starts a process pool in its module body, outside the guard, would start it
again in every worker that imports the script (``spawn``, multiprocessing's forkserver):
thousands of lines of tracebacks and every item a dead worker. Two checks, one message:

- in the parent, when a process pool starts (:func:`check_main_module`): if the call comes
  from the module body of ``__main__`` (a file or stdin) outside every
  ``if __name__ == "__main__":`` block, a ``WorkerStartError`` says so, once, before any
  worker exists. The check reads the bytecode of the main module, so it works for a script
  fed on stdin too, and it errs on the side of silence: a module that compares
  ``__name__`` with ``'__main__'`` in any other way is taken as guarded.
- in a worker, while multiprocessing imports the main module again (:func:`refuse_in_worker`,
  called when an IMap starts): the worker exits at once, silently, with ``EXIT_CODE``, and
  the parent, which sees that code before the worker was ready, reports the missing guard.
  (An IMap only constructed by the module body, and started under the guard, is harmless.)
"""
from __future__ import annotations

import dis
import os
import sys
from types import CodeType, FrameType

#: the exit code of a worker that found itself starting a pool while importing the main
#: module (only read for a worker that died before it was ready)
EXIT_CODE = 86

GUARD_ADVICE = ("put the code that starts pools (and runs the work) under\n"
                "    if __name__ == \"__main__\":\n"
                "        ...\n"
                "or in a function called from there: worker processes may import the main "
                "module again (under 'spawn', on macOS and Windows, and when a program with "
                "threads falls back to multiprocessing's forkserver), and each would start "
                "the pools again")


def _importing_main_in_worker() -> bool:
    """True while multiprocessing imports the main module in a child it starts (the flag
    multiprocessing itself checks to refuse starting processes then)."""
    process = sys.modules.get("multiprocessing.process")
    if process is None:
        return False
    return bool(getattr(process.current_process(), "_inheriting", False))


def refuse_in_worker() -> None:
    """In a worker importing the main module again: leave now, with EXIT_CODE."""
    if _importing_main_in_worker():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(EXIT_CODE)


def _guarded_ranges(code: CodeType) -> list[tuple[int, int]] | None:
    """Byte ranges of ``code`` inside ``if __name__ == '__main__':`` blocks; None when the
    code compares ``__name__`` with ``'__main__'`` in a way this does not recognise."""
    instructions = [i for i in dis.get_instructions(code)
                    if i.opname not in ("CACHE", "EXTENDED_ARG", "NOP", "TO_BOOL",
                                        "NOT_TAKEN")]
    ranges: list[tuple[int, int]] = []
    mentions = 0
    for k, instruction in enumerate(instructions):
        if instruction.opname == "LOAD_CONST" and instruction.argval == "__main__":
            mentions += 1
        if k + 3 >= len(instructions):
            continue
        a, b, compare, jump = instructions[k:k + 4]
        names = {(a.opname, a.argval), (b.opname, b.argval)}
        if names != {("LOAD_NAME", "__name__"), ("LOAD_CONST", "__main__")}:
            continue
        if compare.opname != "COMPARE_OP" or "==" not in compare.argrepr:
            continue
        if "JUMP" in jump.opname and "FALSE" in jump.opname and isinstance(jump.argval, int):
            ranges.append((jump.offset, jump.argval))
    return ranges if mentions == len(ranges) else None


def unguarded_call_site(frame: FrameType | None = None) -> str | None:
    """``'file:line'`` when the calling code runs in the module body of ``__main__`` outside
    every ``if __name__ == '__main__':`` block; None otherwise (or when unsure)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:          # python -c, an interactive session
        return None
    frame = frame or sys._getframe(1)
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            ranges = _guarded_ranges(frame.f_code)
            if ranges is None or any(start <= frame.f_lasti < end for start, end in ranges):
                return None
            return f"{path}:{frame.f_lineno}"
        frame = frame.f_back
    return None


def check_main_module(start_method: str) -> None:
    """Raise WorkerStartError when a process pool is started from the body of the main
    module outside the guard (nothing is done under 'fork', which imports nothing again)."""
    if start_method == "fork":
        return
    where = unguarded_call_site(sys._getframe(1))
    if where is not None:
        from .._errors import WorkerStartError
        raise WorkerStartError(
            f"a process pool is started by the main module outside an "
            f"`if __name__ == \"__main__\":` block ({where}); {GUARD_ADVICE}")


def guard_message(method: str) -> str:
    """What a worker that exited with EXIT_CODE before it was ready means."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", "the main module")
    return (f"imported the main module ({path}) again, as '{method}' workers do, and that "
            f"started a pool: the module has no `if __name__ == \"__main__\":` guard around "
            f"the code that starts pools; {GUARD_ADVICE}")


def unimportable_main(method: str) -> str | None:
    """Why workers started with ``method`` ('spawn', multiprocessing's 'forkserver') cannot
    import the main module again (a script read from stdin), or None."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or getattr(getattr(main, "__spec__", None), "name", None):
        return None
    if os.path.isfile(path):
        return None
    return (f"the main module was read from {path}, which worker processes started with "
            f"'{method}' cannot import again: save the script to a file and run that "
            f"(or use the default start method from a program that has one thread: imap's "
            f"fork server imports nothing again)")

"""The ``@imports`` decorator: modules a function needs wherever it runs."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._evaluate import bind_imports

if TYPE_CHECKING:
    from ._evaluate import ImportEntry

F = TypeVar("F", bound=Callable[..., Any])


def _normalise(modules: object) -> list[ImportEntry]:
    if isinstance(modules, (str, bytes)) or not isinstance(modules, Iterable):
        raise TypeError(
            f"@imports takes a list of module names such as ['re', 'os.path', "
            f"'json,simplejson'] or pairs such as [('os', ['path'])], not {modules!r}")
    entries: list[ImportEntry] = []
    for entry in modules:
        if isinstance(entry, str):
            entries.append(entry)
        elif (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
              and all(isinstance(n, str) for n in (entry[1] or ()))):
            entries.append((entry[0], list(entry[1] or ())))
        else:
            raise TypeError(f"@imports: {entry!r} is neither a module name ('re', 'os.path', "
                            f"'json,simplejson') nor a pair ('module', ['name', ...])")
    return entries


def imports(modules: Iterable[str | tuple[str, Iterable[str]]], forgive: bool = False
            ) -> Callable[[F], F]:
    """Declare the modules ``func`` needs, so it also works in another process or host.

    ``@imports(['re', 'os.path', 'json,simplejson'])`` imports ``re``, binds ``os.path`` as
    ``path`` and binds ``json`` to the first of json/simplejson that imports. The pair form
    ``@imports([('re', []), ('os', ['path'])])`` binds the module and the listed names.

    The modules are imported now, into the function's module globals (as the original PaPy
    did), and again in each worker that loads the function (process pools under spawn or
    forkserver, remote hosts). A missing module raises ImportError naming it; with
    ``forgive=True`` it is a warning here (it still fails in a worker that needs it).
    The function is returned unchanged, with an ``imports`` attribute holding the list.

    Example::

        @imports(['re'])
        def grep(inbox, pattern):
            return inbox[0] if re.search(pattern, inbox[0]) else None
    """
    entries = _normalise(modules)

    def decorate(func: F) -> F:
        if not hasattr(func, "__globals__"):
            raise TypeError(f"@imports decorates Python functions, not {func!r}")
        try:
            bind_imports(func, entries)
        except ImportError as exc:
            if not forgive:
                raise
            import warnings
            warnings.warn(str(exc), ImportWarning, stacklevel=2)
        func.imports = entries   # type: ignore[attr-defined]  # a function's attribute
        return func

    return decorate

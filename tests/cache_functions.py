"""Functions for the cache tests: importable by name in subprocesses, pools and servers."""
from __future__ import annotations

import functools
import os
import tempfile
import time

from papy import Cache, Worker


def double(x):
    return 2 * x


def twice(x):
    """Another name and a docstring: the same fingerprint as double."""
    # and a comment
    return 2 * x


def triple(x):
    return 3 * x


def double_again(y):
    return 2 * y


def with_default(x, n=1):
    return x + n


def with_other_default(x, n=2):
    return x + n


def adder(n):
    def add(x):
        return x + n
    return add


def membership(x):
    return x in {"alpha", "beta", "gamma", "delta"}


def generator_sum(xs):
    return sum(x * 2 for x in xs)


def logged(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


def bare_decorator(func):
    def inner(*args):
        return func(*args)
    return inner


class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        return x * self.factor

    def __call__(self, x):
        return x * self.factor


# lambdas and generator expressions are what these fingerprint tests are about
LAMBDA_ONE = lambda x: x + 1  # noqa: E731 - a lambda is tested
LAMBDA_TWO = (lambda x: x + 1)  # noqa: E731 - a lambda is tested
LAMBDA_OTHER = lambda x: x + 2  # noqa: E731 - a lambda is tested
GENEXPR_A = lambda xs: list(x for x in xs if x)  # noqa: E731 - a lambda is tested
GENEXPR_B = lambda xs: list(x for x in xs if x)  # noqa: E731 - a lambda is tested
CAPTURED_DICT = {"b": 2, "a": 1, "c": {3, 1, 2}}


def captures_dict():
    table = dict(CAPTURED_DICT)

    def look(key):
        return table[key]
    return look


# -- worker functions (the inbox convention) -------------------------------------------
def inc(inbox, n=1):
    return inbox[0] + n


def square(inbox):
    return inbox[0] * inbox[0]


def fails_on_odd(inbox):
    if inbox[0] % 2:
        raise ValueError(f"odd: {inbox[0]}")
    return inbox[0]


def unpicklable(inbox):
    return lambda: inbox[0]


def with_verbose(inbox, factor, verbose=False):
    return inbox[0] * factor


def big(inbox):
    return bytes(4096) + str(inbox[0]).encode()


def slow_inc(inbox):
    time.sleep(0.001)
    return inbox[0] + 1


def pid_of(inbox):
    return os.getpid()


def imported(inbox):
    """Has this process imported the module named ``inbox[0]``?"""
    import sys
    return inbox[0] in sys.modules


def reads_file(inbox):
    with open(inbox[0], "rb") as handle:
        return len(handle.read())


WORKERS = {
    "inc": Worker(inc),
    "inc2": Worker(inc, (2,)),
    "chain": Worker((inc, square), ((3,), ())),
}


def marks(inbox, folder):
    """inbox[0] * 10, leaving one file in ``folder`` per evaluation (any process)."""
    name = f"{inbox[0]!r}-{os.getpid()}-{time.monotonic_ns()}".replace("/", "_")
    open(os.path.join(folder, name), "w").close()
    return inbox[0] * 10


def evaluations(folder) -> int:
    return len(os.listdir(folder))


class Recorded:
    """Evaluate a Worker and send its cache record's delta with each result: the hook as
    a run layer would use it where the Worker runs."""

    def __init__(self, worker, as_text=False):
        self.worker, self.as_text = worker, as_text

    def __call__(self, inbox):
        result = self.worker(inbox)
        return (repr(result) if self.as_text else result), self.worker.cache_record.take()


def plain_double(x):
    return 2 * x


#: a module-level cache: conftest.py gives the session's folder (outside a pytest run: one
#: folder under the temporary folder, kept)
MODULE_CACHE = Cache(os.environ.get("PAPY_TEST_MODULE_CACHE") or os.path.join(
    tempfile.gettempdir(), f"papy-test-module-cache-{os.getuid()}"))


@MODULE_CACHE
def decorated_length(word):
    return len(word)


def describe_record(inbox):
    return f"{inbox[0]['id']}:{inbox[0]['payload']}"


def first_of(inbox):
    return inbox[0][1] if False else 1


def body(n):
    def shifted(inbox):
        return inbox[0] + n
    return shifted


HAMMERED = bytes(20)         # the prefix the hammer writes and reads


def hammer_entry(inbox, root):
    """Store one key again and again with this item's payload, reading it between the
    writes; the number of reads that gave neither a whole payload of some writer nor a
    miss (there must be none)."""
    from papy._cache_store import MISSING, Store
    store = Store(root)
    index = store.index(HAMMERED)
    wrong = 0
    for round_ in range(150):
        size = 10 if round_ % 2 else 5000       # inline entries and result files both
        store.save(index, ["key"], [(inbox[0], "x" * size)])
        index.stale = True                      # see the other processes' packs too
        [location] = index.find(["key"])
        [value] = store.fetch(index, ["key"], [location])
        if value is MISSING:
            continue
        if not (isinstance(value, tuple) and value[1] in ("x" * 10, "x" * 5000)):
            wrong += 1
    return wrong


def read_hammered(root):
    """What a fresh process finds under the hammered key."""
    from papy._cache_index import forget_indexes
    from papy._cache_store import Store
    store = Store(root)
    forget_indexes(store.packs)
    index = store.index(HAMMERED)
    [location] = index.find(["key"])
    [value] = store.fetch(index, ["key"], [location])
    return value


def big_again(inbox):
    """The result of big, by other code."""
    return b"\0" * 4096 + str(inbox[0]).encode()


def kill_step(x, block_at=None):
    """x * 3; blocks for good at ``block_at`` (the SIGKILL tests kill it there)."""
    if x == block_at:
        import threading
        threading.Event().wait()
    return x * 3


def kill_step_inbox(inbox, block_at=None):
    return kill_step(inbox[0], block_at)


# -- the menu of the property test: (function, argument tuples to draw from) -----------
def halve(inbox):
    return inbox[0] // 2


def as_text(inbox, prefix=""):
    return f"{prefix}{inbox[0]}"


def text_length(inbox):
    return len(str(inbox[0]))


def pair_up(inbox, other=0):
    return (inbox[0], other)


def first(inbox):
    value = inbox[0]
    return value[0] if isinstance(value, tuple) else value


def fails_on_multiples(inbox, of=3):
    value = inbox[0]
    if isinstance(value, int) and value % of == 0:
        raise ArithmeticError(f"{value} is a multiple of {of}")
    return value


MENU = [
    (inc, [(), (2,), (-5,)]),
    (square, [()]),
    (halve, [()]),
    (as_text, [(), ("n=",)]),
    (text_length, [()]),
    (pair_up, [(), (1,), ("x",)]),
    (first, [()]),
    (fails_on_multiples, [(), (4,)]),
]


# -- stages of the pipeline tests: each leaves a file per evaluation (any process) -------
def mark(folder, stage, value):
    name = f"{stage}-{value!r}-{os.getpid()}-{time.monotonic_ns()}".replace("/", "_")
    open(os.path.join(folder, name), "w").close()


def evaluated(folder, stage) -> list[str]:
    """The items ``stage`` evaluated, sorted (by their repr)."""
    return sorted(name.split("-")[1] for name in os.listdir(folder)
                  if name.startswith(f"{stage}-"))


def stage_inc(inbox, folder, n=1):
    mark(folder, "inc", inbox[0])
    return inbox[0] + n


def stage_shift(inbox, folder, k=100):
    """Odd items shifted by k, even ones as they are."""
    mark(folder, "shift", inbox[0])
    return inbox[0] + k if inbox[0] % 2 else inbox[0]


def stage_shift_again(inbox, folder, k=100):
    """Other code: the odd items above 6 shifted, the others as they are."""
    value = inbox[0]
    mark(folder, "shift", value)
    return value + k if value % 2 and value > 6 else value


def stage_text(inbox, folder):
    mark(folder, "text", inbox[0])
    return f"<{inbox[0]}>"


def stage_fails_on_5(inbox, folder):
    mark(folder, "fails", inbox[0])
    if inbox[0] % 10 == 5:
        raise ValueError(f"{inbox[0]} ends with 5")
    return inbox[0]


def stage_blocks_at(inbox, folder, block_at=None):
    """Blocks for good at ``block_at`` (the SIGKILL test kills it there)."""
    if inbox[0] == block_at:
        import threading
        open(os.path.join(folder, "blocked"), "w").close()
        threading.Event().wait()
    mark(folder, "blocks", inbox[0])
    return inbox[0] * 3


def length(inbox):
    return len(inbox[0])


def multiply(inbox):
    return inbox[0] * inbox[1]


def first_item(inbox):
    return inbox[0]


def as_pair(inbox):
    return tuple(inbox)

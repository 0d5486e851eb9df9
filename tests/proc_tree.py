"""Source text that test scripts paste in: ``descendants()`` lists every process under the
running one (workers, fork servers, multiprocessing's helpers: not all are its children), read
from /proc. Indented by four spaces, as the scripts it is prepended to (they are dedented)."""

DESCENDANTS = """
    def descendants():
        # every process under this one: workers, fork servers, multiprocessing's helpers
        import os
        children = {}
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                try:
                    with open(f'/proc/{entry}/stat') as handle:
                        stat = handle.read()
                except OSError:
                    continue
                parent = int(stat[stat.rfind(')') + 2:].split()[1])
                children.setdefault(parent, []).append(int(entry))
        found, todo = [], [os.getpid()]
        while todo:
            for child in children.get(todo.pop(), []):
                found.append(child)
                todo.append(child)
        return found
"""

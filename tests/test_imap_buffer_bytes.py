"""The default buffer is bounded in bytes too (imap._running.DEFAULT_BUFFER_BYTES): once the
size of the items is measured, large items get fewer buffer slots; a buffer given
explicitly is in items only. Before the first batch is measured a stride may be read."""
import time

import pytest

import imap._running
from imap import IMap


def identity(x):
    return x


@pytest.mark.parametrize("explicit", [False, True])
def test_large_items_get_fewer_slots_of_a_default_buffer(monkeypatch, explicit):
    monkeypatch.setattr(imap._running, "DEFAULT_BUFFER_BYTES", 8 << 20)
    item = b"x" * 100_000                    # ~200 KB per item, both ways
    settings = dict(buffer=1000) if explicit else {}
    with IMap(worker_type="process", worker_num=2, stride=100, **settings) as pool:
        results = pool.add_task(identity, (item[:-1] + bytes([k % 256]) for k in range(400)))
        pool.start()
        used = []
        for k, value in enumerate(results):
            assert value[:-1] == item[:-1]
            if k >= 100:                     # sizes measured, the first stride drained
                used.append(pool.buffer_used)
                time.sleep(0.002)            # a slow reader: the buffer fills up
            if k == 300:
                break
    if explicit:
        assert max(used) > 200               # in items only: it fills far beyond 8 MB
    else:
        assert max(used) <= (8 << 20) // 200_000 + 100    # the budget and one stride

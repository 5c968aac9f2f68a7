"""readsize.ReadSize: small reads while a session is idle, big ones while data flows."""

from websocketd_py import readsize


def test_reads_are_small_while_idle_and_big_while_data_flows():
    idle, busy = readsize.IDLE_READ_BYTES, 65536
    size = readsize.ReadSize(busy)
    assert size.now == idle
    assert size.after(idle - 1) == idle
    assert size.after(idle) == busy      # it filled the small read: more is waiting
    for _ in range(readsize.SHORT_READS_BEFORE_IDLE):
        assert size.after(100) == busy   # a few short reads do not make it idle
    assert size.after(busy) == busy      # a full read starts the count again
    for _ in range(readsize.SHORT_READS_BEFORE_IDLE):
        size.after(0)
    assert size.after(0) == idle
    assert idle + 33 <= 512  # its bytes object comes from Python's small-object pools

"""Starting a session's threads without waiting for them.

`threading.Thread.start()` blocks until the new thread runs: the starter
sleeps, the new thread wakes it, and under the GIL it only runs again when
the new thread blocks. A session starts two threads (werkzeug's handler and
its writer); measured on connection churn, the waits cost more CPU and
latency than the threads' own start. These threads are daemons that nobody
joins (a session waits for an Event instead), so they need none of
`threading.Thread`'s bookkeeping. Code running in them must not call
`threading.current_thread()` (on Python 3.11 each such thread would leave a
`_DummyThread` behind); neither the session code nor werkzeug's handler does.
"""

import _thread


def start(target, *args):
    """Run `target(*args)` in a new thread and return at once."""
    _thread.start_new_thread(target, args)

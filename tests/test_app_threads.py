"""An app ends every thread it started: `WebSocketApp.close()` leaves nothing behind."""

import threading

import websocketd_py


def test_three_apps_created_and_closed_leave_no_thread():
    before = set(threading.enumerate())
    for options in ({}, {"pingms": 50}, {"passstderr": True}):
        app = websocketd_py.WebSocketApp(["cat"], **options)
        assert set(threading.enumerate()) - before  # each runs threads of its own
        app.close()
        assert set(threading.enumerate()) <= before

"""waveviz.app.serve without a browser: a free port is bindable; a Streamlit app comes up at the
URL it yields and is gone afterwards; a server that cannot start says why in one line, at once."""
from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest

from waveviz.app.serve import ServerError, free_port, serve


def test_free_port_is_bindable():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_serve_yields_a_healthy_server_and_stops_it(tmp_path):
    (tmp_path / "app.py").write_text("import streamlit as st\nst.write('hello')\n")
    with serve(tmp_path, dict(os.environ), timeout=60) as base:
        assert base.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(f"{base}/_stcore/health", timeout=5).read() == b"ok"
    with pytest.raises(OSError):  # terminated: nothing answers there any more
        urllib.request.urlopen(f"{base}/_stcore/health", timeout=2)


def test_a_server_that_cannot_start_raises_one_line_with_its_log(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:  # no app.py in the folder: streamlit exits at once
        with serve(tmp_path, dict(os.environ), timeout=60):
            pytest.fail("the server should not have started")
    msg = str(e.value)
    assert time.monotonic() - t0 < 30  # not the 60 s timeout
    assert "\n" not in msg
    assert msg.startswith("streamlit did not start") and "exited with code" in msg
    assert "app.py" in msg  # the tail of the server's output says what was wrong

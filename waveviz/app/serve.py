"""`streamlit run app.py` in a child process, for the browser tests and the browser benchmark: on a
free localhost port, ready once `/_stcore/health` answers "ok", stopped afterwards.

    with serve(ROOT, dict(os.environ, WAVEVIZ_HOME=str(home))) as base:  # "http://127.0.0.1:PORT"
        ...

The server's output goes to a temporary file; if it exits or does not answer within `timeout`
seconds, `ServerError` says so in one line, with the tail of that output.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOG_TAIL = 2000  # characters of the server's output quoted in the error


class ServerError(RuntimeError):
    """The app's server did not start (it exited, or did not answer in time)."""


def free_port() -> int:
    """A localhost TCP port that was free a moment ago (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_command(port: int, script: str = "app.py") -> list[str]:
    """`python -m streamlit run SCRIPT` headless on 127.0.0.1:PORT, no usage stats, no file watcher."""
    return [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true", "--server.port", str(port),
            "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]


@contextmanager
def serve(root: Path, env: dict, *, timeout: float = 60, script: str = "app.py") -> Iterator[str]:
    """Run `streamlit run SCRIPT` in `root` with environment `env` → its base URL once healthy.

    Raises ServerError (one line: why, and the last LOG_TAIL characters of the server's output) if
    the server exits or is not healthy within `timeout` s. On leaving, the server is terminated
    (killed if it has not stopped 10 s later).
    """
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(streamlit_command(port, script), cwd=root, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                        if r.read() == b"ok":
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    why = (f"exited with code {proc.returncode}" if proc.poll() is not None
                           else f"not healthy after {timeout:g} s")
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-LOG_TAIL:]
                    raise ServerError(f"streamlit did not start in {root} ({why}): {tail!r}")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

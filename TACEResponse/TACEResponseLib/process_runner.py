"""Run a command in a background process, read its output line by line, and stop it with all its children.

The Slicer module starts ``PythonSlicer -m TACEResponseLib predict ... --progress jsonl`` through
:class:`ProcessRunner` and polls it from a Qt timer, so the application stays responsive. Tests and the
in-Slicer self-test use :func:`run_to_completion`, which drives the same class synchronously.

No Qt and no Slicer here: the standard library only, so this module can be tested anywhere.
Written for Python 3.9 (the Python bundled with Slicer 5.8).
"""

import os
import queue
import signal
import subprocess
import threading
import time

_WINDOWS = os.name == "nt"
# Windows process creation flags (defined here so the module imports on every platform)
_CREATE_NEW_PROCESS_GROUP = 0x00000200
_CREATE_NO_WINDOW = 0x08000000


class ProcessRunner:
    """One background process whose stdout lines are collected by a reader thread.

    ``start()`` returns at once. Call ``read_lines()`` to get the stdout lines that arrived since the last
    call, ``poll()`` to learn whether it finished (its exit code, or None while it runs), ``cancel()`` to
    end it together with every process it started. stderr is collected whole (``stderr_text``).
    """

    def __init__(self, command, env=None, cwd=None):
        self.command = [str(part) for part in command]
        self.env = env
        self.cwd = cwd
        self.process = None
        self.cancelled = False
        self._lines = queue.Queue()
        self._stderr = []
        self._readers = []

    # -- starting and reading -------------------------------------------------------------------------

    def start(self):
        if self.process is not None:
            raise RuntimeError("process already started")
        options = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE,
                   "env": self.env, "cwd": self.cwd}
        if _WINDOWS:
            # own process group (so it can be ended as a tree) and no console window popping up
            options["creationflags"] = _CREATE_NEW_PROCESS_GROUP | _CREATE_NO_WINDOW
        else:
            # own session and process group: killpg reaches the launcher and everything it started
            options["start_new_session"] = True
        self.process = subprocess.Popen(self.command, **options)
        self._readers = [
            threading.Thread(target=self._pump, args=(self.process.stdout, self._lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.process.stderr, self._stderr.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    @staticmethod
    def _pump(stream, sink):
        try:
            for raw in iter(stream.readline, b""):
                sink(raw.decode("utf-8", "replace").rstrip("\r\n"))
        except (OSError, ValueError):  # stream closed while the process was being killed
            pass
        finally:
            try:
                stream.close()
            except OSError:
                pass

    def read_lines(self):
        """stdout lines received since the last call (without line endings)."""
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    @property
    def stderr_text(self):
        return "\n".join(self._stderr)

    @property
    def pid(self):
        return self.process.pid if self.process is not None else None

    def poll(self):
        """The exit code once the process has ended and all its output has been read; None before."""
        if self.process is None or self.process.poll() is None:
            return None
        # the pipes close when the process ends; a reader still busy after that means an orphaned
        # grandchild holds them open, and it is not ours to wait for
        for reader in self._readers:
            reader.join(timeout=2.0)
        return self.process.returncode

    def wait(self, timeout=None):
        """Block until the process ends (or ``timeout`` seconds pass: then None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            code = self.poll()
            if code is not None:
                return code
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    # -- stopping -------------------------------------------------------------------------------------

    def cancel(self, grace_s=3.0):
        """End the process and all processes it started. Safe to call more than once or after it ended."""
        self.cancelled = True
        if self.process is None:
            return
        if _WINDOWS:
            self._cancel_windows()
        else:
            self._cancel_posix(grace_s)
        try:
            self.process.wait(timeout=grace_s + 2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=2.0)

    def _cancel_posix(self, grace_s):
        group = self.process.pid  # start_new_session made the child the leader of its own group
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except (ProcessLookupError, PermissionError):
                return  # the whole group is already gone
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                if not _group_alive(group):
                    return
                self.process.poll()  # reap the leader so it does not linger as a zombie
                time.sleep(0.05)

    def _cancel_windows(self):
        try:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, creationflags=_CREATE_NO_WINDOW, timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass
        if self.process.poll() is None:
            self.process.kill()


def _group_alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_to_completion(command, env=None, cwd=None, on_line=None, idle=None, timeout=None, runner_class=ProcessRunner):
    """Run ``command`` to its end; call ``on_line(line)`` for each stdout line and ``idle()`` while waiting.

    Returns ``(exit_code, stderr_text)``. ``idle`` lets a GUI process its events (the Slicer self-test
    passes ``slicer.app.processEvents``). On ``timeout`` the process tree is killed and TimeoutError raised.
    """
    runner = runner_class(command, env=env, cwd=cwd).start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            for line in runner.read_lines():
                if on_line is not None:
                    on_line(line)
            code = runner.poll()
            if code is not None:
                for line in runner.read_lines():
                    if on_line is not None:
                        on_line(line)
                return code, runner.stderr_text
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("{} did not finish within {} s".format(command[0], timeout))
            if idle is not None:
                idle()
            time.sleep(0.05)
    except BaseException:
        runner.cancel()
        raise

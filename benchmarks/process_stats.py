"""Run a command as a child process and measure it: wall time, CPU time and peak RSS of that child."""

import os
import subprocess
import time


def measure(command, env=None):
    """Returns dict(wall_s, cpu_s, peak_rss_mb, returncode, stderr_tail)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    # wait4 gives this child's own resource usage (ru_maxrss in KiB on Linux), not all children's
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "wall_s": time.perf_counter() - started,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024.0,
        "returncode": process.returncode,
        "stderr_tail": stderr.decode(errors="replace").strip().splitlines()[-1:] if stderr else [],
    }

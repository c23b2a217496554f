"""``python -m deploy.supervise -- CMD ...``: run a command, and run it again if it fails.

For where no systemd is (a container, the demo): the hub exits non-zero when its ingest
thread dies (status 70) and must be started again, as ``Restart=on-failure`` does in
deploy/systemd/. A clean exit (status 0, or ended by SIGTERM or SIGINT) ends the
supervisor too; SIGTERM and SIGINT are
passed on to the child, which is waited for. Restarts back off from 1 s to 30 s, and the
back-off starts again once a child has run for a minute. The child's output is its own
(inherited), so a READY line it prints reaches whoever reads the supervisor's output.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

STABLE_S = 60.0  # a child that ran this long starts the back-off again
# as systemd counts them: 0, or ended by SIGTERM/SIGINT (uvicorn re-raises the signal it
# stopped on, so a hub told to stop ends "by" it)
CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)


def supervise(
    cmd: list[str],
    *,
    backoff: float = 1.0,
    backoff_max: float = 30.0,
    max_restarts: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run ``cmd`` until it exits 0 or ``stop`` is set; the last exit status."""
    stop = stop or threading.Event()
    delay, restarts = backoff, 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(cmd)
        watcher = threading.Thread(target=_pass_stop, args=(stop, child), daemon=True)
        watcher.start()
        status = child.wait()
        if status in CLEAN:
            return 0
        if stop.is_set():
            return status
        if max_restarts is not None and restarts >= max_restarts:
            print(f"supervise: {cmd[0]} exited {status}; giving up", file=sys.stderr, flush=True)
            return status
        if time.monotonic() - started > STABLE_S:
            delay = backoff
        restarts += 1
        print(
            f"supervise: {' '.join(cmd)} exited {status}; restart {restarts} in {delay:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if stop.wait(delay):
            return status
        delay = min(delay * 2, backoff_max)


def _pass_stop(stop: threading.Event, child: subprocess.Popen[bytes]) -> None:
    while child.poll() is None:
        if stop.wait(0.5):
            child.send_signal(signal.SIGTERM)
            return


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploy.supervise", description=__doc__)
    p.add_argument("--backoff", type=float, default=1.0, help="first delay before a restart")
    p.add_argument("--backoff-max", type=float, default=30.0)
    p.add_argument("--max-restarts", type=int, default=None, help="default: no limit")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = p.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        p.error("no command given")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *a: stop.set())
    return supervise(
        cmd,
        backoff=args.backoff,
        backoff_max=args.backoff_max,
        max_restarts=args.max_restarts,
        stop=stop,
    )


if __name__ == "__main__":
    sys.exit(main())

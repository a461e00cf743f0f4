"""`rp-agent supervise --name NAME -- COMMAND...`: keep a pod process alive, as the image does.

The one home of the pods' supervision policy: docker/start.sh runs the image's proxy, agent and
lease watcher under this command, and devstack pods do too, so the suite exercises what RunPod
runs. When COMMAND ends it is started again after 1 s,
then 2 s, 4 s ... at most 30 s between crashes, back to 1 s once a run lasted a minute. A stop
(SIGTERM/SIGINT) is passed to COMMAND once, the supervisor waits for it (the agent finishes its
uploads) and exits 0; a stop during the backoff starts nothing more.

Each run learns that it is a restart from its environment (`RP_AGENT_RESTARTS`: how many
times COMMAND was started before, `RP_AGENT_LAST_EXIT`: how the previous run ended), and the
sync agent says so in the pod's log in R2 (agent.py): a run's log shows "rp-agent restarted"
after an agent died, however it died.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("rp_agent.supervise")

RESTARTS_ENV = "RP_AGENT_RESTARTS"
LAST_EXIT_ENV = "RP_AGENT_LAST_EXIT"
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
HEALTHY_AFTER_S = 60.0


def describe_status(returncode: int) -> str:
    """`status 3`, or `signal SIGKILL` for a run the kernel or someone killed."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def restart_note(environ: Mapping[str, str] | None = None) -> str | None:
    """The line a restarted process logs at start (None on its first run)."""
    env = os.environ if environ is None else environ
    restarts = (env.get(RESTARTS_ENV) or "").strip()
    if not restarts.isdigit() or int(restarts) == 0:
        return None
    last = env.get(LAST_EXIT_ENV) or "unknown"
    return (
        f"rp-agent restarted by its supervisor (restart {restarts}): the previous run ended "
        f"with {last}; uploads it had not finished are retried from the queue"
    )


@dataclass
class Supervisor:
    name: str
    argv: Sequence[str]
    first_delay_s: float = FIRST_DELAY_S
    max_delay_s: float = MAX_DELAY_S
    healthy_after_s: float = HEALTHY_AFTER_S
    say: Callable[[str], None] = field(
        default=lambda line: print(line, file=sys.stderr, flush=True)
    )
    stopping: threading.Event = field(default_factory=threading.Event)
    child: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def stop(self) -> None:
        """Pass the stop on to the running command once; no new run starts after this."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        delay = self.first_delay_s
        last_exit: str | None = None
        while not self.stopping.is_set():
            env = dict(os.environ)
            env[RESTARTS_ENV] = str(self.restarts)
            if last_exit is not None:
                env[LAST_EXIT_ENV] = last_exit
            started = time.monotonic()
            try:
                self.child = subprocess.Popen(list(self.argv), env=env)
            except OSError as exc:
                self.say(f"[supervise] cannot start {self.name}: {exc}")
                return 127
            self.say(f"[supervise] {self.name} started (pid {self.child.pid})")
            if self.stopping.is_set():  # a stop that landed while it was being started
                self.child.send_signal(signal.SIGTERM)
            returncode = self.child.wait()
            if self.stopping.is_set():
                return 0
            if time.monotonic() - started >= self.healthy_after_s:
                delay = self.first_delay_s
            last_exit = describe_status(returncode)
            self.say(f"[supervise] {self.name} exited with {last_exit}; restarting in {delay:g}s")
            if self.stopping.wait(delay):
                return 0
            delay = min(delay * 2, self.max_delay_s)
            self.restarts += 1
        return 0


def main(name: str, argv: Sequence[str]) -> int:
    supervisor = Supervisor(name, argv)

    def on_signal(_signum: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return supervisor.run()

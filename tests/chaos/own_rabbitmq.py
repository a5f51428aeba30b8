"""A RabbitMQ node of a scenario's own, which it may kill and start again (scenario 3): the
machine's RabbitMQ is never restarted.

The node runs the server's own start script (``/usr/lib/rabbitmq/bin/rabbitmq-server``, not
the ``/usr/sbin`` wrapper, which switches to the ``rabbitmq`` user and writes its output to
``/var/log/rabbitmq``) as a child process leading a process group of its own, as the user
running the suite, with everything under a temporary directory: its node name
(``chaos<pid>x<port>@localhost``), AMQP and distribution ports (free ones), configuration (a
listener on 127.0.0.1 only; the machine's ``/etc/rabbitmq`` files are not read), Erlang
cookie (``HOME``), data (``mnesia``) and plugins (none). Its log goes to a file of the
caller's. It registers with the machine's epmd, as any node does.

``kill`` SIGKILLs the whole process group (the beam and its helpers: a crash, no clean
shutdown); ``start`` again keeps the data (durable queues and persistent messages) unless
``wipe`` deleted it first; ``close`` kills it and removes the directory, and the context
manager always does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from kombu import Connection

from tests.support.broker import free_port

BIN = Path(os.environ.get("CHAOS_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_WITHIN = 90.0  # seconds; a boot takes some 5 s on an idle 2-core machine


class OwnRabbitMQ:
    """One RabbitMQ node on free ports, its files in a temporary directory."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-rabbitmq-"))
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos{os.getpid()}x{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        (self.dir / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        """The broker URL of the node's default virtual host, as ``guest``."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @property
    def data(self) -> Path:
        return self.dir / "mnesia"

    def start(self, timeout: float = START_WITHIN) -> float:
        """Start the node; return the seconds until it took an AMQP connection."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            out.write(f"\n=== start {self.starts + 1} at {time.strftime('%X')} ===\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [str(BIN / "rabbitmq-server")],
                cwd=self.dir,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"RabbitMQ node {self.node} exited ({self.process.returncode}); see {self.log}"
                )
            if time.monotonic() - started > timeout:
                self.kill()
                raise RuntimeError(f"RabbitMQ node {self.node} did not start within {timeout} s")
            time.sleep(0.25)
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the node's process group (a crash: nothing flushed, nothing closed)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def wipe(self) -> None:
        """Delete the node's data (queues, messages, users, virtual hosts); it must be down.
        The next start is a new node: the default virtual host and ``guest`` only."""
        shutil.rmtree(self.data, ignore_errors=True)

    def close(self) -> None:
        """Kill the node and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def queues(self) -> dict[str, bool]:
        """Return the node's queues (default virtual host) and whether each is durable, as
        ``rabbitmqctl list_queues`` reports them (the node must be up)."""
        done = subprocess.run(
            [
                str(BIN / "rabbitmqctl"),
                "-n",
                self.node,
                "--quiet",
                "list_queues",
                "name",
                "durable",
            ],
            env=self._environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found: dict[str, bool] = {}
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("true", "false"):
                found[parts[0]] = parts[1] == "true"
        return found

    def __enter__(self) -> OwnRabbitMQ:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def _environment(self) -> dict[str, str]:
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("NODENAME", "HOME")
        }
        return {
            **inherited,
            "HOME": str(self.dir),  # its Erlang cookie
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.dir / "plugins-expand"),
            "RABBITMQ_MNESIA_BASE": str(self.data),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_LOGS": "-",  # to stdout: the caller's log file
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _answers(self) -> bool:
        try:
            with Connection(self.url, connect_timeout=1) as conn:
                conn.connect()
                return bool(conn.connected)
        except Exception:  # down or booting: any error means "not yet"
            return False

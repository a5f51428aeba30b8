"""RabbitMQ for the chaos runs: a virtual host per scenario (made and removed with
``rabbitmqctl``, so side-by-side scenarios never share a queue), and what waits in it."""

from __future__ import annotations

import os
import subprocess

import amqp
from kombu import Connection

SERVER = os.environ.get("CHAOS_RABBITMQ", "127.0.0.1:5672")
USER = os.environ.get("CHAOS_RABBITMQ_USER", "guest:guest")


def create_vhost(name: str) -> str:
    """Create the virtual host ``name`` for the default user; return its broker URL."""
    _ctl("add_vhost", name)
    _ctl("set_permissions", "-p", name, USER.split(":")[0], ".*", ".*", ".*")
    return f"amqp://{USER}@{SERVER}/{name}"


def delete_vhost(name: str) -> None:
    if os.environ.get("CHAOS_KEEP_DB"):
        return
    _ctl("delete_vhost", name)


def waiting(url: str, queues: list[str]) -> int:
    """Return how many messages wait in ``queues`` (not counting those a worker holds
    unacknowledged); a queue not declared yet holds none."""
    total = 0
    with Connection(url) as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                total += channel.queue_declare(queue=queue, passive=True).message_count
            except amqp.exceptions.NotFound:
                pass
            finally:
                if channel.is_open:
                    channel.close()
    return total


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "--quiet", *args], check=True, capture_output=True, timeout=60)

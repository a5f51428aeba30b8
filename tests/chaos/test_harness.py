"""The chaos harness reads each scenario's markers from its source and schedules by them:
which run by themselves, on which brokers, and which start first at full size."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import Job, scenarios, start_order
from tests.chaos.processes import Cluster
from tests.chaos.scenarios import worker_kills


def jobs() -> dict[str, Job]:
    return {job.key: job for job in scenarios()}


def test_every_scenario_of_the_issue_runs_and_three_on_rabbitmq_too() -> None:
    found = scenarios()
    assert sorted({job.number for job in found}) == list(range(1, 16))
    assert [job.key for job in found if job.broker == "rabbitmq"] == [
        "worker_kills-rabbitmq",
        "broker_restart-rabbitmq",
        "duplicate_delivery-rabbitmq",
    ]


def test_throughput_scenarios_run_alone_and_worker_kills_only_at_full_size() -> None:
    found = jobs()
    assert found["db_outage"].runs_alone(quick=True)
    assert found["pinned_xmin"].runs_alone(quick=True)
    for key in ("worker_kills", "worker_kills-rabbitmq"):
        assert found[key].runs_alone(quick=False)
        assert not found[key].runs_alone(quick=True)
    assert not found["relay_crash"].runs_alone(quick=False)


def test_at_full_size_the_longest_start_first_and_quick_keeps_the_issue_order() -> None:
    batch = [job for job in scenarios() if not job.runs_alone(quick=False)]
    full = start_order(batch, quick=False)
    assert full[0].key == "rebuild_live"
    minutes = [job.full_minutes for job in full]
    assert minutes == sorted(minutes, reverse=True)
    unmarked = [job.key for job in full if not job.full_minutes]
    assert unmarked == [job.key for job in batch if not job.full_minutes]  # stable
    assert start_order(batch, quick=True) == batch


def test_workers_run_one_pool_process_unless_the_scenario_asks_for_more(tmp_path: Path) -> None:
    def concurrency(cluster: Cluster) -> list[str]:
        return [w.argv[w.argv.index("--concurrency") + 1] for w in cluster.workers]

    assert concurrency(Cluster({}, tmp_path, 8000)) == ["1", "1"]
    assert concurrency(Cluster({}, tmp_path, 8000, concurrency=2)) == ["2", "2"]
    assert worker_kills.WORKER_CONCURRENCY == 2

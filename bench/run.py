"""``python -m bench.run [--quick]``: every scenario, one table, bench/results/*.json."""

from __future__ import annotations

import argparse
import sys

from bench.harness import Processes, prepare_environment, report

GROUPS = ("append", "pipeline", "replay", "api", "dead_letters", "embedded")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run under a minute"
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated scenario groups to run (default: all of {', '.join(GROUPS)})",
    )
    args = parser.parse_args()
    quick, only = args.quick, set(args.only.split(","))
    if unknown := only - set(GROUPS):
        parser.error(f"unknown scenario group(s): {', '.join(sorted(unknown))}")
    prepare_environment()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from bench import embedded, scenarios, scenarios_read, versus

    sizes = scenarios.Sizes.of(quick)
    processes = Processes()
    results = []
    try:
        if "append" in only:
            scenarios.create_raw_table()
            results.append(scenarios.append(sizes, per_commit=1))
            results.append(scenarios.append(sizes, per_commit=100))
            results.append(scenarios.append(sizes, per_commit=1, writers=8))
            results.append(versus.eventsourcing_library(sizes))
        if "pipeline" in only:
            processes.worker("bench-worker", concurrency=2)
            pipeline, throughput = scenarios.pipeline(sizes, processes)
            results.append(pipeline)
            results.append(scenarios.latency(sizes, throughput))
            # The API scenario measures request handling: no workers compete for the cores.
            processes.stop_all()
        if "replay" in only:
            results.append(scenarios_read.replay(sizes))
        if "api" in only:
            results.extend(scenarios_read.api(sizes, processes))
        if "dead_letters" in only:
            results.extend(scenarios_read.dead_letters(sizes))
        if "embedded" in only:
            results.extend(embedded.embedded(processes, sizes.repeats))
    finally:
        processes.stop_all()
    report(results, quick, partial=only != set(GROUPS))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench.run [--quick]``: every scenario, one table, bench/results/*.json."""

from __future__ import annotations

import argparse
import sys

from bench.harness import Processes, prepare_environment, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run under a minute"
    )
    quick = parser.parse_args().quick
    prepare_environment()

    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from bench import scenarios, scenarios_read

    sizes = scenarios.Sizes.of(quick)
    processes = Processes()
    results = []
    try:
        scenarios.create_raw_table()
        results.append(scenarios.append(sizes, per_commit=1))
        results.append(scenarios.append(sizes, per_commit=100))
        results.append(scenarios.append(sizes, per_commit=1, writers=8))
        processes.worker("bench-worker", concurrency=2)
        pipeline, throughput = scenarios.pipeline(sizes, processes)
        results.append(pipeline)
        results.append(scenarios.latency(sizes, throughput))
        results.append(scenarios_read.replay(sizes))
        results.extend(scenarios_read.api(sizes, processes))
        results.extend(scenarios_read.dead_letters(sizes))
    finally:
        processes.stop_all()
    report(results, quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

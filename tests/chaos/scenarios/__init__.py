"""One module per chaos scenario: ``NUMBER`` (its number in the issue, the run order),
``NAME``, ``ENV`` (extra environment of its processes), ``PROCESSES`` (default True: start
gunicorn, the workers and beat) and ``run(cluster, users, *, quick, seed)`` returning its row."""

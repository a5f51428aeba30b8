"""One module per chaos scenario, each with ``run(cluster, token, *, quick, seed)``."""

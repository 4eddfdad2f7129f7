"""What the tests share: real components started on loopback (Slurm, Prometheus, SMTP,
PostgreSQL), the fake Kubernetes API server, captured sacct dumps, and the helpers they
all use (``net.free_port``, ``net.wait_for``)."""

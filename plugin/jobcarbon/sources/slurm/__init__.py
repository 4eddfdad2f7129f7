"""Slurm: the epilog's spool, sacct (its format, runner and parser), pyslurm, the live cluster."""

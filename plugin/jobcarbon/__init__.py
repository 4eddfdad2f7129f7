"""jobcarbon: energy and carbon accounting for every job on a compute cluster."""

__version__ = "0.1.0"

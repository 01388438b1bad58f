"""LSMN Studio core: multitask networks with shared, sparse and routed modules."""

__version__ = "0.1.0"

"""poisonprobe: indiscriminate data poisoning of linear probes on frozen SSL extractors."""

__version__ = "0.1.0"

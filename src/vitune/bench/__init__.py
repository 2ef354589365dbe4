"""``vitune bench``: training step time and memory of every method against full fine-tuning and the backprop
floor, inference throughput unmerged and merged, stored bytes and merge time, with peers in the same run
(docs/benchmarks.md)."""

from .harness import run_bench
from .step import BenchSettings
from .table import format_table
from .variants import ALL_METHODS, DEFAULT_METHODS

__all__ = ["ALL_METHODS", "BenchSettings", "DEFAULT_METHODS", "format_table", "run_bench"]

"""Batches: many inputs through one model or a pipeline of steps, resumable, with live progress.

``Batch`` publishes (``api``), ``states`` reads many jobs' states in a few round trips, ``jsonl``
reads batch files line by line, and ``summary`` is the worker-side callback that counts the outcome.
"""

from .api import Batch, BatchRun, ItemResult, Job, Progress, Step
from .jsonl import BadLine, InputItem, read_jsonl

__all__ = ["BadLine", "Batch", "BatchRun", "InputItem", "ItemResult", "Job", "Progress", "Step", "read_jsonl"]

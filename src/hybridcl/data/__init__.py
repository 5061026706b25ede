"""Data: function records, readers, the extractor, the bundled corpus, task examples and batching.

records.Record (CodeSearchNet fields) -> tasks.make_examples (a direction) -> batching.encode.
"""
from hybridcl.data.batching import Encoded, batch_indices, collate, encode
from hybridcl.data.extract import ExtractReport, Filters, TreeSource, extract
from hybridcl.data.records import Record, read_records, write_records
from hybridcl.data.tasks import Example, TaskData, format_prompt, load_task_data, make_examples

__all__ = [
    "Encoded", "Example", "ExtractReport", "Filters", "Record", "TaskData", "TreeSource",
    "batch_indices", "collate", "encode", "extract", "format_prompt", "load_task_data",
    "make_examples", "read_records", "write_records",
]

"""Data: function records, readers, the extractor, the bundled corpus, task examples and batching.

records.Record (CodeSearchNet fields) -> tasks.make_examples (a direction) -> batching.encode.
Import the submodules (``hybridcl.data.records`` ...): this package imports nothing, so that
``hybridcl data`` commands start without loading torch.
"""

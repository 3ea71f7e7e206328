"""Where batches meet the device: the copy stream, device-side decoding.

Not for: the ops that run on a device once a batch is there (``stoke.ops``), nor pinned host buffers
(``stoke.pipeline.buffers``).
"""

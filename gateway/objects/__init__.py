"""The object-storage layer: one backend per storage profile behind one interface
(gateway.objects.backend.ObjectBackend), used by the S3 handlers, eager renders and the
importer alike, none of which asks which kind of storage a bucket uses.

- backend: the interface, what a write is given, and the resources a backend works with
- local: objects as blobs under generated names (local directory), small ones in their rows
- upstream: objects kept in place in an upstream bucket under their own keys
- reading: an object's bytes as segments of blobs
- staging: a blob written under the intent log until a row claims it
- sources: an object version as the source of a variant render
"""

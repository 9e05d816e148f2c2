"""The Qdrant backends and what they stand on, one module per job (no names are re-exported here).

``server`` (QdrantBackend: a server, local mode or memory), ``edge`` (QdrantEdgeBackend: qdrant-edge in
this process) and ``edge_filters``; ``collection`` (the collection layout), ``common`` (what both share),
``connection`` (clients), ``errors`` (one-line errors, retries), ``metadata`` (point handles, the metadata
store), ``snapshots`` (the in-memory backend's snapshot files) and ``request`` (the raw two-stage request).
"""

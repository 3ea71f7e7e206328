"""The bytes on disk: manifest, shards, field encodings and checksums, specified in ``docs/format.md``."""

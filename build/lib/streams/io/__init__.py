"""Edges that turn bytes and files into churnstream values: Avro codec, events files.

- :mod:`streams.io.schemas` — the registry of Avro contracts in ``schemas/`` and its checks;
- :mod:`streams.io.avro` — Confluent wire-format encode/decode (:class:`AvroCodec`);
- :mod:`streams.io.events_file` — JSON Lines events files (``.jsonl`` / ``.jsonl.gz``).

Nothing here imports Faust or asyncio.
"""

"""Pure logic of churnstream: events, state, features, clock and timers, labels, model,
policy, reasons and the per-customer scoring step. No Faust, asyncio, Kafka or I/O here.
"""

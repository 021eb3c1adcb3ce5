"""Latency of the score API on loopback: a bounded load generator that prints p50/p99.

Usage::

    python bench/score_api.py --url http://127.0.0.1:6066 --customer-id c1 --customer-id c2 \
        [--token TOKEN] [--requests 2000] [--concurrency 8] [--max-seconds 30]

Sends at most ``--requests`` GETs of ``/v1/customers/{id}/score`` (ids in turn) with
``--concurrency`` requests in flight, and stops early after ``--max-seconds``. Prints a table
line, then one JSON object (the last line): requests, status counts, p50/p99/max in ms, req/s.
Only loopback URLs are accepted: this is a benchmark, not a load test of someone's server.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp


def percentile_ms(latencies_s: list[float], fraction: float) -> float:
    """Return the nearest-rank ``fraction`` percentile of ``latencies_s`` in milliseconds.

    >>> percentile_ms([0.001, 0.002, 0.003, 0.004], 0.5)
    2.0
    """
    if not latencies_s:
        return float("nan")
    ordered = sorted(latencies_s)
    rank = max(1, round(fraction * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1] * 1000.0


def is_loopback(url: str) -> bool:
    """Return whether ``url`` points at this machine (localhost, 127.0.0.0/8 or ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def run(
    base_url: str,
    customer_ids: list[str],
    token: str | None,
    requests: int,
    concurrency: int,
    max_seconds: float,
) -> dict[str, Any]:
    """Send the requests and return the summary."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    urls = itertools.cycle(
        f"{base_url.rstrip('/')}/v1/customers/{quote(customer_id, safe='')}/score"
        for customer_id in customer_ids
    )
    remaining = iter(range(requests))
    latencies_s: list[float] = []
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    deadline = started + max_seconds
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

        async def client() -> None:
            # Each client takes the next request number until none are left or time is up.
            for _ in remaining:
                if time.perf_counter() > deadline:
                    return
                sent = time.perf_counter()
                try:
                    async with session.get(next(urls), headers=headers) as response:
                        await response.read()
                        statuses[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies_s.append(time.perf_counter() - sent)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    return {
        "requests": sum(statuses.values()),
        "status_counts": dict(sorted(statuses.items())),
        "concurrency": concurrency,
        "p50_ms": round(percentile_ms(latencies_s, 0.50), 3),
        "p99_ms": round(percentile_ms(latencies_s, 0.99), 3),
        "max_ms": round(max(latencies_s) * 1000.0, 3) if latencies_s else None,
        "requests_per_s": round(len(latencies_s) / elapsed_s, 1) if elapsed_s > 0 else None,
        "elapsed_s": round(elapsed_s, 3),
    }


def main(argv: list[str]) -> int:
    """Parse the flags, run the benchmark, print the summary; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True, help="worker base URL, e.g. http://127.0.0.1:6066")
    parser.add_argument("--customer-id", action="append", required=True, dest="customer_ids")
    parser.add_argument("--token", default=None, help="bearer token (CHURNSTREAM_API_TOKENS)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    args = parser.parse_args(argv[1:])
    if not is_loopback(args.url):
        parser.error(f"--url must be a loopback address (127.0.0.1, ::1, localhost): {args.url!r}")
    if not 1 <= args.requests <= 1_000_000:
        parser.error(f"--requests must be 1-1000000, got {args.requests}")
    if not 1 <= args.concurrency <= 256:
        parser.error(f"--concurrency must be 1-256, got {args.concurrency}")
    if not 0 < args.max_seconds <= 3600:
        parser.error(f"--max-seconds must be in (0, 3600], got {args.max_seconds}")
    summary = asyncio.run(
        run(
            args.url,
            args.customer_ids,
            args.token,
            args.requests,
            args.concurrency,
            args.max_seconds,
        )
    )
    print(
        f"score API: {summary['requests']} requests, p50 {summary['p50_ms']} ms, "
        f"p99 {summary['p99_ms']} ms, {summary['requests_per_s']} req/s, "
        f"status {summary['status_counts']}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""Scraping a ``/metrics`` endpoint over real HTTP (the standard library's client, in a thread)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

SCRAPE_TIMEOUT_S = 5.0


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
            body = response.read().decode()
            return int(response.status), response.headers.get("Content-Type", ""), body
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code), error.headers.get("Content-Type", ""), error.read().decode()


async def get(url: str) -> tuple[int, str, str]:
    """Status code, content type and body of ``GET url``."""
    return await asyncio.to_thread(_get, url)


async def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition at ``url``, parsed by prometheus_client's own parser, by
    (sample name, labels)."""
    status, content_type, body = await get(url)
    assert status == 200, (status, body)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def sample(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One scraped sample's value, 0 when the series is not there."""
    return scraped.get((name, frozenset(labels.items())), 0.0)

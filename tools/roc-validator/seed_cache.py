"""Seed rocrate-validator's HTTP cache with the vendored RO-Crate 1.2 JSON-LD context.

The validator resolves a crate's `@context` over HTTP; this machine reaches only package
registries, so the context is vendored here (`ro-crate-1.2-context.jsonld`, the RO-Crate 1.2
specification's context as the `ro-crate` npm package 3.7.2 ships it) and stored in the
validator's requests-cache database. Run with the validator's own Python (.venv-rocv):

    .venv-rocv/bin/python tools/roc-validator/seed_cache.py CACHE_PATH

then validate with `rocrate-validator --cache-path CACHE_PATH --offline validate ...`.
"""

import io
import sys
from pathlib import Path

import requests
from requests_cache import CachedSession
from urllib3 import HTTPResponse

CONTEXTS = {
    "https://w3id.org/ro/crate/1.2/context": Path(__file__).with_name(
        "ro-crate-1.2-context.jsonld"
    ),
}


def seed(cache_path: str) -> None:
    session = CachedSession(cache_name=cache_path, backend="sqlite", expire_after=-1)
    for url, path in CONTEXTS.items():
        request = requests.Request("GET", url).prepare()
        response = requests.Response()
        response.status_code = 200
        response.url = url
        response.request = request
        body = path.read_bytes()
        headers = {"Content-Type": "application/ld+json", "Content-Length": str(len(body))}
        response.headers.update(headers)
        response.raw = HTTPResponse(
            body=io.BytesIO(body),
            headers=headers,
            status=200,
            preload_content=False,
            request_url=url,
        )
        response._content = body
        response.encoding = "utf-8"
        session.cache.save_response(response)
    session.close()


if __name__ == "__main__":
    seed(sys.argv[1])

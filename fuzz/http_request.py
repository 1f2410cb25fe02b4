"""Fuzz target: the HTTP front door's request parsing (``gateway/http.py``): the
``Authorization`` header, the JSON body (``parse_body``) and the OpenAI request fields and
``X-Groundplane-*`` headers (``call_from_http``) of ``/v1/chat/completions`` and
``/v1/completions``, as ``HttpApi._complete`` chains them.

The input is ``header lines, a blank line, the body``: ``name: value`` lines (CR LF or LF);
without a blank line the whole input is the body.

Oracle: only ``GroundplaneError`` may escape (the front door answers those with their 4xx
status; anything else would be a 500).
"""

from __future__ import annotations

from _harness import documented_errors_only, instrumented, main, text_of

with instrumented():
    from groundplane.gateway import http
    from groundplane.gateway.auth import Tenant, TenantConfig, TenantRegistry

TOKEN = "fuzz-token-0123456789"
_TENANTS = TenantRegistry([TenantConfig(Tenant("fuzz"), (TOKEN,))])
_LOCATED = TenantRegistry([TenantConfig(Tenant("fuzz"), (TOKEN,), location=(48.1, 11.6))])


def _split(data: bytes) -> tuple[dict[str, str], bytes]:
    head, blank, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    if not blank:
        return {}, data
    headers: dict[str, str] = {}
    for line in text_of(head).split("\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers, body


def test_one_input(data: bytes) -> None:
    headers, body = _split(data)
    for registry in (_TENANTS, _LOCATED):
        with documented_errors_only():
            tenant = registry.authenticate(headers.get("authorization"))
            document = http.parse_body(body)
            for chat in (True, False):
                with documented_errors_only():
                    http.call_from_http(
                        document,
                        headers,
                        tenant,
                        chat=chat,
                        default_location=registry.location(tenant),
                    )


if __name__ == "__main__":
    main(test_one_input)

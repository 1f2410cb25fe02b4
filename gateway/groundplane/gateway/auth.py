"""Tenants and their bearer tokens.

A call carries ``authorization: Bearer <token>``; the token names the tenant. Tokens are held as
SHA-256 digests only: a tenants file may give them so (``"token_sha256": ["<64 hex>"]``, what
:func:`token_sha256` prints) and then no clear token is on disk or in the gateway's memory at all;
clear ``"tokens"`` are hashed when loaded. A call costs one SHA-256 of the presented token and a
dictionary lookup of the digest, confirmed with :func:`hmac.compare_digest`: the lookup's timing
depends on the digest, which an attacker cannot steer towards a stored one without a preimage,
never on how many leading characters of a token were right. Plain SHA-256 (not scrypt/argon2)
is enough because tokens must be high-entropy (at least 16 characters; ``up`` draws 32 random
bytes): a slow hash protects guessable passwords, not random keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from groundplane.kernel.errors import InvalidArgument, Unauthenticated

BEARER_PREFIX = "bearer "
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant and its admission limits: ``max_concurrent`` calls run, ``max_queued`` wait."""

    tenant_id: str
    max_concurrent: int = 8
    max_queued: int = 32

    def __post_init__(self) -> None:
        if not self.tenant_id:
            raise InvalidArgument("tenant_id must be a non-empty string")
        if self.max_concurrent < 1 or self.max_queued < 0:
            raise InvalidArgument(
                f"tenant {self.tenant_id!r}: expected max_concurrent ≥ 1 and max_queued ≥ 0, "
                f"got {self.max_concurrent} and {self.max_queued}"
            )


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A tenant as configured: its limits, the tokens that authenticate it and where its users
    are when a call does not say (``location``, geodetic degrees ``(lat, lon)``; the HTTP front
    door's default for its ``X-Groundplane-Location`` header; None: calls must say)."""

    tenant: Tenant
    tokens: Sequence[str]
    location: tuple[float, float] | None = None
    token_digests: Sequence[bytes] = ()
    """SHA-256 digests of further tokens (the tenants file's ``token_sha256``)."""

    def __post_init__(self) -> None:
        if self.location is not None:
            lat, lon = self.location
            if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
                raise InvalidArgument(
                    f"tenant {self.tenant.tenant_id!r}: expected location (lat, lon) within "
                    f"±90°, ±180°, got {self.location}"
                )


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def token_sha256(token: str) -> str:
    """The ``token_sha256`` entry of a tenants file for ``token`` (lowercase hex)."""
    return _digest(token).hex()


def _digests(tenant_id: str, entry: Mapping[str, object]) -> tuple[bytes, ...]:
    value = entry.get("token_sha256", [])
    if not isinstance(value, list) or not all(
        isinstance(v, str) and _SHA256_HEX.fullmatch(v) for v in value
    ):
        raise InvalidArgument(
            f"tenant {tenant_id!r}: expected 'token_sha256' as a list of 64-character lowercase "
            "hex SHA-256 digests of tokens"
        )
    return tuple(bytes.fromhex(v) for v in value)


def _location(tenant_id: str, entry: Mapping[str, object]) -> tuple[float, float] | None:
    value = entry.get("location")
    if value is None:
        return None
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise InvalidArgument(
            f"tenant {tenant_id!r}: expected 'location' as [lat, lon] in degrees, got {value!r}"
        )
    return (float(value[0]), float(value[1]))


class TenantRegistry:
    """Bearer token → :class:`Tenant`."""

    def __init__(self, configs: Iterable[TenantConfig]) -> None:
        self._by_digest: dict[bytes, Tenant] = {}
        self._locations: dict[str, tuple[float, float]] = {}
        seen: set[str] = set()
        for config in configs:
            if config.tenant.tenant_id in seen:
                raise InvalidArgument(f"tenant {config.tenant.tenant_id!r} is configured twice")
            seen.add(config.tenant.tenant_id)
            if config.location is not None:
                self._locations[config.tenant.tenant_id] = config.location
            if not config.tokens and not config.token_digests:
                raise InvalidArgument(f"tenant {config.tenant.tenant_id!r} has no token")
            for token in config.tokens:
                if len(token) < 16 or any(c.isspace() for c in token):
                    raise InvalidArgument(
                        f"tenant {config.tenant.tenant_id!r}: tokens must be at least 16 "
                        f"characters without spaces, got one of {len(token)} characters"
                    )
            for digest in (*map(_digest, config.tokens), *config.token_digests):
                if digest in self._by_digest:
                    raise InvalidArgument(
                        f"a token of tenant {config.tenant.tenant_id!r} is also configured for "
                        f"tenant {self._by_digest[digest].tenant_id!r}"
                    )
                self._by_digest[digest] = config.tenant
        self._by_key: dict[bytes, tuple[bytes, Tenant]] = {
            digest: (digest, tenant) for digest, tenant in self._by_digest.items()
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Mapping[str, object]]) -> TenantRegistry:
        """From ``{tenant_id: {"tokens": [...], "token_sha256": [...], "max_concurrent": n,
        "max_queued": n, "location": [lat, lon]}}`` (one of the token lists at least; limits
        and location optional)."""
        configs: list[TenantConfig] = []
        for tenant_id, entry in data.items():
            tokens = entry.get("tokens", [] if "token_sha256" in entry else None)
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise InvalidArgument(
                    f"tenant {tenant_id!r}: expected 'tokens' as a list of strings (or "
                    f"'token_sha256' as a list of digests), got {type(tokens).__name__}"
                )
            limits = {k: entry[k] for k in ("max_concurrent", "max_queued") if k in entry}
            for key, value in limits.items():
                if not isinstance(value, int) or isinstance(value, bool):
                    raise InvalidArgument(
                        f"tenant {tenant_id!r}: expected {key} as an integer, got {value!r}"
                    )
            configs.append(
                TenantConfig(
                    Tenant(tenant_id, **limits),  # type: ignore[arg-type]  # ints, checked above
                    tuple(tokens),
                    _location(tenant_id, entry),
                    _digests(tenant_id, entry),
                )
            )
        return cls(configs)

    def authenticate(self, authorization: str | None) -> Tenant:
        """The tenant of an ``authorization`` metadata value; Unauthenticated otherwise."""
        if not authorization:
            raise Unauthenticated(
                "missing credentials: expected metadata 'authorization: Bearer <token>'"
            )
        if not authorization[: len(BEARER_PREFIX)].lower() == BEARER_PREFIX:
            raise Unauthenticated(
                "expected metadata 'authorization: Bearer <token>', got another scheme"
            )
        digest = _digest(authorization[len(BEARER_PREFIX) :].strip())
        found = self._by_key.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            raise Unauthenticated("the bearer token is not valid for any tenant")
        return found[1]

    def location(self, tenant: Tenant) -> tuple[float, float] | None:
        """Where the tenant's users are when a call does not say (None: not configured)."""
        return self._locations.get(tenant.tenant_id)

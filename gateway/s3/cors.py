"""CORS as S3 applies it (S3 User Guide, "Using cross-origin resource sharing"): a bucket's
rules, which one a request matches, and the headers that answer it.

A rule allows a request when one of its AllowedOrigin patterns matches the Origin, its
AllowedMethod list has the method (for a preflight: Access-Control-Request-Method), and, for a
preflight, every header in Access-Control-Request-Headers matches one of its AllowedHeader
patterns. Patterns may hold one "*", matching any run of characters. The first rule that
allows a request answers it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.s3.errors import InvalidRequest, MalformedXML

METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")
MAX_RULES = 100
# What every response that a CORS configuration may change varies by.
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
# What an actual (non-preflight) answer varies by: the other two are preflight headers.
ACTUAL_VARY = "Origin"


def _pattern(value: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in value.split("*")), re.DOTALL)


@dataclass(frozen=True)
class CorsRule:
    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_seconds: int | None = None
    id: str | None = None
    _origins: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)
    _headers: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_origins", tuple(_pattern(o) for o in self.allowed_origins))
        # Header names are case-insensitive: compared in lower case.
        headers = tuple(_pattern(h.lower()) for h in self.allowed_headers)
        object.__setattr__(self, "_headers", headers)

    def allows(self, origin: str, method: str, request_headers: Iterable[str] = ()) -> bool:
        if method not in self.allowed_methods:
            return False
        if not any(pattern.fullmatch(origin) for pattern in self._origins):
            return False
        return all(
            any(pattern.fullmatch(name) for pattern in self._headers) for name in request_headers
        )

    @property
    def any_origin(self) -> bool:
        return "*" in self.allowed_origins

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed_origins": list(self.allowed_origins),
            "allowed_methods": list(self.allowed_methods),
            "allowed_headers": list(self.allowed_headers),
            "expose_headers": list(self.expose_headers),
            "max_age_seconds": self.max_age_seconds,
            "id": self.id,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CorsRule:
        return cls(
            allowed_origins=tuple(value["allowed_origins"]),
            allowed_methods=tuple(value["allowed_methods"]),
            allowed_headers=tuple(value.get("allowed_headers", ())),
            expose_headers=tuple(value.get("expose_headers", ())),
            max_age_seconds=value.get("max_age_seconds"),
            id=value.get("id"),
        )


class CorsConfiguration:
    """A bucket's rules, and the answers they gave to the actual requests seen so far: most
    requests come from the few origins of a bucket's sites, so each answer is worked out once
    (a configuration is compiled once per distinct stored text, see gateway.meta.buckets)."""

    # Origins are the client's to choose: past this many, the remembered answers start over.
    MAX_REMEMBERED = 256

    def __init__(self, rules: Sequence[CorsRule]) -> None:
        self.rules = tuple(rules)
        self._answers: dict[tuple[str, str, bool], dict[str, str] | None] = {}

    def actual_headers(self, origin: str, method: str, credentialed: bool) -> dict[str, str] | None:
        """The headers of an actual request's answer (response_headers); None: no rule
        allows it."""
        key = (origin, method, credentialed)
        try:
            return self._answers[key]
        except KeyError:
            pass
        rule = find_rule(self.rules, origin, method)
        headers = None if rule is None else response_headers(rule, origin, credentialed)
        if len(self._answers) >= self.MAX_REMEMBERED:
            self._answers.clear()
        self._answers[key] = headers
        return headers


def validate(rules: Sequence[CorsRule]) -> None:
    """Raise the S3 error PutBucketCors answers for rules it refuses."""
    if not rules or len(rules) > MAX_RULES:
        raise MalformedXML(f"A CORS configuration has 1 to {MAX_RULES} rules.")
    for rule in rules:
        if not rule.allowed_origins or not rule.allowed_methods:
            raise MalformedXML("Every CORSRule needs an AllowedOrigin and an AllowedMethod.")
        for method in rule.allowed_methods:
            if method not in METHODS:
                raise InvalidRequest(
                    "Found unsupported HTTP method in CORS config. Unsupported method is " + method
                )
        for origin in rule.allowed_origins:
            if origin.count("*") > 1:
                raise InvalidRequest(
                    f'AllowedOrigin "{origin}" can not have more than one wildcard.'
                )
        for header in rule.allowed_headers:
            if header.count("*") > 1:
                raise InvalidRequest(
                    f'AllowedHeader "{header}" can not have more than one wildcard.'
                )
        if rule.max_age_seconds is not None and rule.max_age_seconds < 0:
            raise MalformedXML("MaxAgeSeconds cannot be negative.")


def find_rule(
    rules: Sequence[CorsRule], origin: str, method: str, request_headers: Iterable[str] = ()
) -> CorsRule | None:
    """The first rule that allows the request, if any."""
    wanted = [name.lower() for name in request_headers]
    for rule in rules:
        if rule.allows(origin, method, wanted):
            return rule
    return None


def requested_headers(value: str | None) -> list[str]:
    """The header names of an Access-Control-Request-Headers value, in lower case."""
    if not value:
        return []
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def preflight_headers(
    rule: CorsRule, origin: str, method: str, request_headers: Sequence[str]
) -> dict[str, str]:
    """The headers of a 200 answer to a preflight that ``rule`` allows."""
    # The preflight cannot tell whether the request will carry credentials: it allows both.
    headers = _origin_headers(rule, origin, credentialed=False)
    if headers["Access-Control-Allow-Origin"] != "*":
        headers["Access-Control-Allow-Credentials"] = "true"
    headers["Access-Control-Allow-Methods"] = ", ".join(rule.allowed_methods)
    if request_headers:
        headers["Access-Control-Allow-Headers"] = ", ".join(request_headers)
    if rule.max_age_seconds is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age_seconds)
    headers["Vary"] = VARY
    return headers


def response_headers(rule: CorsRule, origin: str, credentialed: bool) -> dict[str, str]:
    """The headers an actual (non-preflight) request that ``rule`` allows gets: what the
    browser reads of an actual answer (Fetch standard, "CORS check"). The methods and max age
    a preflight gets would be ignored here, so they are not sent on every answer, nor is
    Allow-Credentials to a request that carries none."""
    headers = _origin_headers(rule, origin, credentialed)
    if credentialed:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.expose_headers:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
    return headers


def _origin_headers(rule: CorsRule, origin: str, credentialed: bool) -> dict[str, str]:
    # "*" only for a rule open to every origin and a request without credentials: a browser
    # refuses "*" for a credentialed request, so the origin is echoed.
    if rule.any_origin and not credentialed:
        return {"Access-Control-Allow-Origin": "*"}
    return {"Access-Control-Allow-Origin": origin}


def merge_vary(existing: str | None, added: str) -> str:
    """A Vary value with the names of ``added`` appended unless already there."""
    names = [name.strip() for name in (existing or "").split(",") if name.strip()]
    known = {name.lower() for name in names}
    for name in added.split(","):
        name = name.strip()
        if name and name.lower() not in known:
            names.append(name)
            known.add(name.lower())
    return ", ".join(names)

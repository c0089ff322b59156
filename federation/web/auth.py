"""Who is asking: the dashboard's bearer tokens and their two roles.

A token from the coordinator config's `dashboard.tokens` names its holder and role: `read`
sees studies, nodes and files; `admin` may also submit (WES) and cancel. Tokens are compared
in constant time. Pages take the token from the login cookie, the API also from
`Authorization: Bearer`. Nothing else grants access: no token, no data.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from enum import StrEnum

from federation.settings import DashboardToken

COOKIE_NAME = "federation_token"
BEARER_PREFIX = "bearer "


class Role(StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    @property
    def admin(self) -> bool:
        return self.role is Role.ADMIN


def identify(tokens: tuple[DashboardToken, ...], presented: str | None) -> Principal | None:
    """The holder of `presented`, or None; every token is compared (constant time each)."""
    if not presented:
        return None
    found = None
    for token in tokens:
        if hmac.compare_digest(token.token.encode(), presented.encode()):
            found = Principal(token.name, Role(token.role))
    return found


def presented_token(authorization: str | None, cookie: str | None) -> str | None:
    """The bearer token of the Authorization header, else the login cookie's."""
    if authorization and authorization.lower().startswith(BEARER_PREFIX):
        return authorization[len(BEARER_PREFIX) :].strip()
    return cookie

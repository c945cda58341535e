"""Bearer API tokens: ``pty_<id>_<secret>``; only the argon2id hash of the secret is stored.

Roles: ``user`` (own jobs), ``staff`` (sees and cancels every job), ``admin`` (as staff; reserved for
administration endpoints). A token is checked by its id (a database lookup, so a revoked token is
refused at once) and then its secret against the hash; secrets already verified in this process
are remembered by their SHA-256 (in memory only) so a busy client does not pay an argon2 hash per
request.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Optional

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from .db import Token

__all__ = ["ROLES", "Principal", "create_token", "revoke_token", "verify_token", "TokenCache"]

ROLES = ("user", "staff", "admin")
PREFIX = "pty"
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """Who is calling: ``user`` name, ``role`` and the ``token_id`` used."""

    user: str
    role: str
    token_id: str

    @property
    def sees_all(self) -> bool:
        return self.role in ("staff", "admin")


def create_token(Session: sessionmaker, user: str, role: str) -> str:
    """Create a token for ``user`` with ``role`` and return it (the only time it is ever shown).

    Raises
    ------
    ValueError
        Unknown role or an empty/odd user name.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not user or len(user) > 128 or not all(c.isalnum() or c in "._-@" for c in user):
        raise ValueError(f"user {user!r}: 1-128 letters, digits or . _ - @")
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    with Session.begin() as s:
        s.add(Token(id=token_id, user=user, role=role, secret_hash=_hasher.hash(secret), created_at=time.time()))
    return f"{PREFIX}_{token_id}_{secret}"


def revoke_token(Session: sessionmaker, token_or_id: str) -> Token:
    """Revoke a token given as the token itself or its id (the ``pty_<id>_`` part).

    Raises
    ------
    KeyError
        No such token.
    """
    token_id = _parse(token_or_id)[0] if token_or_id.startswith(PREFIX + "_") else token_or_id
    with Session.begin() as s:
        row = s.get(Token, token_id)
        if row is None:
            raise KeyError(f"no token with id {token_id!r}")
        if row.revoked_at is None:
            row.revoked_at = time.time()
        s.flush()
        s.expunge(row)
    return row


def list_tokens(Session: sessionmaker) -> list[dict]:
    with Session() as s:
        return [{"id": t.id, "user": t.user, "role": t.role, "created_at": t.created_at,
                 "revoked": t.revoked_at is not None} for t in s.scalars(select(Token).order_by(Token.created_at))]


def _parse(token: str) -> tuple[str, str]:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise ValueError("malformed token")
    return parts[1], parts[2]


class TokenCache:
    """SHA-256 of secrets that verified, by token id (revocation is still read from the database)."""

    def __init__(self, max_entries: int = 10_000):
        self._ok: dict[str, str] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    def known(self, token_id: str, secret: str) -> bool:
        with self._lock:
            return self._ok.get(token_id) == hashlib.sha256(secret.encode()).hexdigest()

    def add(self, token_id: str, secret: str) -> None:
        with self._lock:
            if len(self._ok) >= self._max:
                self._ok.clear()
            self._ok[token_id] = hashlib.sha256(secret.encode()).hexdigest()


def verify_token(Session: sessionmaker, token: str, cache: Optional[TokenCache] = None) -> Optional[Principal]:
    """The principal of a valid, unrevoked token, else ``None`` (never says which check failed)."""
    try:
        token_id, secret = _parse(token)
    except ValueError:
        return None
    with Session() as s:
        row = s.get(Token, token_id)
        if row is None or row.revoked_at is not None:
            return None
        user, role, secret_hash = row.user, row.role, row.secret_hash
    if cache is None or not cache.known(token_id, secret):
        try:
            _hasher.verify(secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return None
        if cache is not None:
            cache.add(token_id, secret)
    return Principal(user=user, role=role, token_id=token_id)

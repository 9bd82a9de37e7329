"""Identity events on users.events. They never carry a password, a hash or a token."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class UserRegistered(_Record):
    """A new account, by password or by an OAuth provider. Key: the user id."""

    type: Literal["UserRegistered"] = "UserRegistered"
    event_id: UUID
    occurred_at: datetime
    user_id: int
    email: str | None
    full_name: str
    provider: str


class UserRoleChanged(_Record):
    """A user's role changed (e.g. `shopstream users create-admin`). Key: the user id."""

    type: Literal["UserRoleChanged"] = "UserRoleChanged"
    event_id: UUID
    occurred_at: datetime
    user_id: int
    role: Literal["user", "admin"]


EVENTS: tuple[type[BaseModel], ...] = (UserRegistered, UserRoleChanged)

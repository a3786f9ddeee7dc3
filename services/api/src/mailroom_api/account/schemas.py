"""Settings bodies."""

from __future__ import annotations

from typing import Annotated

import msgspec

from mailroom_api.http.body import Request

# An address as `from` takes it ("Acme <noreply@mail.acme.com>" or bare); bounded like a header line.
DefaultFrom = Annotated[str, msgspec.Meta(max_length=998)]


class UpdateSettings(Request, frozen=True, kw_only=True):
    # null clears it; absent leaves it as it is.
    default_from: DefaultFrom | msgspec.UnsetType | None = msgspec.UNSET


class AccountSettings(msgspec.Struct, frozen=True, kw_only=True):
    default_from: str | None  # used as `from` when a send omits it

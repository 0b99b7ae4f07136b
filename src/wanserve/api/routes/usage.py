"""`GET /v1/usage`: seconds of video made, by model, size and day (the admin key: everyone's)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from wanserve.api.auth import bearer_matches
from wanserve.api.fields import Text
from wanserve.api.schemas import error_responses
from wanserve.api.services import Svc, caller, store_read
from wanserve.errors import InvalidRequest
from wanserve.jobs.usage import usage

router = APIRouter(prefix="/v1", tags=["usage"], responses=error_responses(400, 401))


class UsageEntry(BaseModel):
    """One bucket: a key's videos of one model and size on one UTC day."""

    owner_id: str
    model: str
    size: str
    date: str
    seconds: float
    videos: int


class UsageReport(BaseModel):
    """Usage buckets and their totals."""

    object: str = "list"
    data: list[UsageEntry]
    total_seconds: float
    total_videos: int


def _day(value: str | None, param: str) -> str | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise InvalidRequest(f"{param} must be a date such as 2026-12-01.", param=param) from None


@router.get("/usage", response_model=UsageReport)
async def get_usage(
    request: Request,
    svc: Svc,
    start_date: Annotated[Text | None, Query(max_length=32)] = None,
    end_date: Annotated[Text | None, Query(max_length=32)] = None,
    owner_id: Annotated[Text | None, Query(max_length=64)] = None,
) -> UsageReport:
    """Seconds of video made by the caller's key; with the admin key, every key's
    (`owner_id` narrows it to one)."""
    admin = svc.settings.admin_key
    if bearer_matches(request, admin.get_secret_value() if admin else None):
        owner = owner_id
    else:
        owner = caller(request)
        if owner_id is not None and owner_id != owner:
            raise InvalidRequest("owner_id needs the admin key.", param="owner_id")
    buckets = await store_read(
        svc,
        usage,
        svc.store.engine,
        owner=owner,
        start_day=_day(start_date, "start_date"),
        end_day=_day(end_date, "end_date"),
    )
    return UsageReport(
        data=[
            UsageEntry(
                owner_id=b.owner,
                model=b.model,
                size=b.size,
                date=b.day,
                seconds=b.seconds,
                videos=b.videos,
            )
            for b in buckets
        ],
        total_seconds=sum(b.seconds for b in buckets),
        total_videos=sum(b.videos for b in buckets),
    )

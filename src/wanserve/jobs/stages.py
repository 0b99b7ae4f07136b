"""How long each stage of a job takes, as cumulative histograms in the database.

Workers run in other processes and on other machines, so they add their observations to
shared rows (one per stage and bucket, already cumulative, plus a sum) and `/metrics`
reads those rows: the histogram is the fleet's, whichever process answers the scrape.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from wanserve.errors import StoreUnavailable
from wanserve.jobs.db import StageMetricRow, writer
from wanserve.jobs.sql import outage_as_unavailable

logger = logging.getLogger(__name__)

STAGES = ("queue_wait", "generate", "encode", "store")
BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, math.inf)
SUM = "sum"


def _label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class StageMetrics:
    """Observations into, and histograms out of, the `stage_metrics` table."""

    def __init__(self, engine: Engine):
        self._reads = sessionmaker(engine)
        self._writes = sessionmaker(writer(engine))

    def observe(self, stage: str, seconds: float) -> None:
        """Add one duration; a store outage loses it (metrics never hold a job up)."""
        seconds = max(0.0, seconds)
        labels = [_label(b) for b in BUCKETS if seconds <= b]
        try:
            for _ in range(3):
                with outage_as_unavailable(), self._writes.begin() as session:
                    counted = session.execute(
                        update(StageMetricRow)
                        .where(StageMetricRow.stage == stage, StageMetricRow.le.in_(labels))
                        .values(value=StageMetricRow.value + 1)
                    ).rowcount  # type: ignore[attr-defined]
                    if counted == len(labels):
                        session.execute(
                            update(StageMetricRow)
                            .where(StageMetricRow.stage == stage, StageMetricRow.le == SUM)
                            .values(value=StageMetricRow.value + seconds)
                        )
                        return
                self._create_rows(stage)  # the stage's first observation anywhere
        except StoreUnavailable:
            logger.warning("stage %s: duration not recorded (job store unavailable)", stage)

    def _create_rows(self, stage: str) -> None:
        try:
            with outage_as_unavailable(), self._writes.begin() as session:
                session.add_all(
                    StageMetricRow(stage=stage, le=label, value=0.0)
                    for label in [*(_label(b) for b in BUCKETS), SUM]
                )
        except IntegrityError:
            pass  # another process made them first

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Observe how long the block took (when it finished without an exception)."""
        started = time.monotonic()
        yield
        self.observe(stage, time.monotonic() - started)

    def histograms(self) -> dict[str, tuple[list[tuple[str, float]], float]]:
        """Per stage: the cumulative buckets in order, and the sum."""
        with outage_as_unavailable(), self._reads.begin() as session:
            rows = session.execute(
                select(StageMetricRow.stage, StageMetricRow.le, StageMetricRow.value)
            ).all()
        values: dict[str, dict[str, float]] = {}
        for stage, le, value in rows:
            values.setdefault(stage, {})[le] = value
        order = [_label(b) for b in BUCKETS]
        return {
            stage: ([(le, found.get(le, 0.0)) for le in order], found.get(SUM, 0.0))
            for stage, found in values.items()
        }

"""OTP housekeeping sweep."""

from __future__ import annotations

import structlog

from emanet.core.tasks import JobContext, periodic
from emanet.otp import service

log = structlog.get_logger("emanet.otp")


@periodic("otp.cleanup", every=600)
async def cleanup_codes(ctx: JobContext) -> None:
    async with ctx.database.transaction() as session:
        challenges, states = await service.cleanup(session)
    log.info("otp_cleaned", challenges=challenges, phone_states=states)

"""The users process: gRPC AuthService over Postgres, and the outbox of users.events."""

from __future__ import annotations

import asyncio
import logging

import faust
import grpc

from agents.common.failures import is_transient
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.users import DOMAIN
from agents.users.passwords import Passwords
from agents.users.service import IdentityService
from agents.users.servicer import AuthServicer
from protos import users_pb2, users_pb2_grpc

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)
    passwords = Passwords(settings.auth)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        service = IdentityService(runtime.pool, settings, passwords, runtime.sweeper.wake)
        users_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(service), server)
        return [users_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]

    async def prune(runtime: DomainRuntime) -> None:
        """Expired refresh tokens and families and ended login budgets, at start and hourly."""
        service = IdentityService(runtime.pool, settings, passwords)
        while True:
            try:
                pruned = await service.prune()
            except Exception as e:
                if not is_transient(e):
                    log.exception("pruning expired refresh tokens failed")
            else:
                if pruned:
                    log.info("pruned %d expired refresh tokens, families and login budgets", pruned)
            await asyncio.sleep(PRUNE_EVERY_S)

    return app, DomainRuntime(app, settings, DOMAIN, add_servicers, tasks=[prune])

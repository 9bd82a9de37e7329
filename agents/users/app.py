"""The users process: gRPC AuthService over Postgres, and the outbox of users.events."""

from __future__ import annotations

import faust
import grpc

from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.users import DOMAIN
from agents.users.passwords import Passwords
from agents.users.service import IdentityService
from agents.users.servicer import AuthServicer
from protos import users_pb2, users_pb2_grpc


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)
    passwords = Passwords(settings.auth)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        service = IdentityService(runtime.pool, settings, passwords, runtime.sweeper.wake)
        users_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(service), server)
        return [users_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]

    return app, DomainRuntime(app, settings, DOMAIN, add_servicers)

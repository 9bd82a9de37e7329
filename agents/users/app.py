"""The users process. Its commands and reads arrive with their issue; until then its agent
dead-letters what it is sent and its gRPC server answers health checks."""

from __future__ import annotations

import faust
import grpc

from agents.common.agent import not_yet_agent
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings
from agents.users import DOMAIN
from topics import USERS_COMMANDS


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        return []

    runtime = DomainRuntime(app, settings, DOMAIN, add_servicers)
    not_yet_agent(app, runtime, USERS_COMMANDS)
    return app, runtime

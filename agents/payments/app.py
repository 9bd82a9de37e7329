"""The payments process. Its commands and reads arrive with their issue; today it serves gRPC health."""

from __future__ import annotations

import faust
import grpc

from agents.payments import DOMAIN
from agents.common.runtime import DomainRuntime, create_faust_app
from agents.common.settings import Settings


def bootstrap(settings: Settings) -> tuple[faust.App, DomainRuntime]:
    app = create_faust_app(DOMAIN, settings)

    def add_servicers(server: grpc.aio.Server, runtime: DomainRuntime) -> list[str]:
        return []

    return app, DomainRuntime(app, settings, DOMAIN, add_servicers)

"""Typed keys of the application's and the request's state."""

from __future__ import annotations

from aiohttp import web

from agents.common.settings import Settings
from gateway.bus import BusClient
from gateway.catalogue import PageCache
from gateway.grpc_clients import GrpcClients
from gateway.identity import Identity

SETTINGS = web.AppKey("settings", Settings)
BUS = web.AppKey("bus", BusClient)
GRPC = web.AppKey("grpc", GrpcClients)
PAGES = web.AppKey("catalogue_pages", PageCache)

REQUEST_ID = web.RequestKey("request_id", str)
IDENTITY = web.RequestKey("identity", Identity)

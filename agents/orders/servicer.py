"""gRPC OrderService: a user's orders, from Postgres; another user's order is NOT_FOUND. The
user is the service token's (an admin's may name another), never the request's."""

from __future__ import annotations

import uuid

import asyncpg
import grpc

from agents.common.errors import Invalid, NotFound
from agents.common.rpc import rpc, timestamp
from agents.common.service_tokens import acting_user
from agents.orders import repository
from agents.orders.repository import OrderRow
from protos import orders_pb2, orders_pb2_grpc

MAX_LIMIT = 100


def order_proto(o: OrderRow) -> orders_pb2.Order:
    return orders_pb2.Order(
        id=o.id,
        user_id=o.user_id,
        status=o.status,
        reason=o.reason or "",
        total_price="" if o.total_price is None else f"{o.total_price:.2f}",
        created_at=timestamp(o.created_at),
        updated_at=timestamp(o.updated_at),
        items=[
            orders_pb2.OrderItem(
                id=i["id"],
                order_id=i["order_id"],
                product_id=i["product_id"],
                quantity=i["quantity"],
                price="" if i["price"] is None else f"{i['price']:.2f}",
            )
            for i in o.items
        ],
        history=[
            orders_pb2.StatusChange(
                status=h["status"], reason=h["reason"] or "", at=timestamp(h["at"])
            )
            for h in o.history
        ],
    )


class OrderServicer(orders_pb2_grpc.OrderServiceServicer):  # type: ignore[misc]
    def __init__(self, pool: asyncpg.Pool, page_size: int) -> None:
        self._pool = pool
        self._page_size = page_size

    @rpc
    async def ListOrders(
        self, request: orders_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.ListOrdersResponse:
        limit = request.limit or self._page_size
        if request.offset < 0 or not 1 <= limit <= MAX_LIMIT:
            raise Invalid(f"offset must be >= 0 and limit 1..{MAX_LIMIT}")
        orders = await repository.orders_for_user(
            self._pool, acting_user(request.user_id), request.offset, limit
        )
        return orders_pb2.ListOrdersResponse(orders=[order_proto(o) for o in orders])

    @rpc
    async def GetOrder(
        self, request: orders_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        order = await repository.order_for_user(
            self._pool, acting_user(request.user_id), request.order_id
        )
        if order is None:
            raise NotFound(f"order {request.order_id} does not exist")
        return order_proto(order)

    @rpc
    async def GetOrderByRequest(
        self, request: orders_pb2.GetOrderByRequestRequest, context: grpc.aio.ServicerContext
    ) -> orders_pb2.Order:
        try:
            command_id = uuid.UUID(request.command_id)
        except ValueError:
            raise NotFound("no such order request") from None
        order = await repository.order_by_command(
            self._pool, acting_user(request.user_id), command_id
        )
        if order is None:
            raise NotFound("no order for this request yet")
        return order_proto(order)

"""IncrementalAlterConfigs (Kafka API 44, version 0), which aiokafka's admin client lacks.

Unlike AlterConfigs, it changes only the configs named and leaves a topic's other overrides as
they are (an operator's own settings survive `shopstream topics create`).
"""

from __future__ import annotations

from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Boolean, Int8, Int16, Int32, Schema, String

API_KEY = 44
TOPIC_RESOURCE = 2
SET = 0


class IncrementalAlterConfigsResponse_v0(Response):  # type: ignore[misc]
    API_KEY = API_KEY
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "responses",
            Array(
                ("error_code", Int16),
                ("error_message", String("utf-8")),
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
            ),
        ),
    )


class IncrementalAlterConfigsRequest_v0(RequestStruct):  # type: ignore[misc]
    API_KEY = API_KEY
    API_VERSION = 0
    RESPONSE_TYPE = IncrementalAlterConfigsResponse_v0
    SCHEMA = Schema(
        (
            "resources",
            Array(
                ("resource_type", Int8),
                ("resource_name", String("utf-8")),
                (
                    "configs",
                    Array(
                        ("name", String("utf-8")),
                        ("config_operation", Int8),
                        ("value", String("utf-8")),
                    ),
                ),
            ),
        ),
        ("validate_only", Boolean),
    )


class IncrementalAlterConfigsRequest(Request[IncrementalAlterConfigsRequest_v0]):  # type: ignore[misc]
    API_KEY = API_KEY

    def __init__(self, topics: dict[str, dict[str, str]]) -> None:
        """Set these configs of these topics: {topic: {name: value}}."""
        self._resources = [
            (TOPIC_RESOURCE, topic, [(name, SET, value) for name, value in configs.items()])
            for topic, configs in topics.items()
        ]

    def build(self, request_struct_class: type[Any]) -> IncrementalAlterConfigsRequest_v0:
        return IncrementalAlterConfigsRequest_v0(self._resources, False)

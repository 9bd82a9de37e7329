"""Generated files stay in step with their sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from topics import CATALOGUE, INBOUND, all_topic_names
from topics.asyncapi import asyncapi_document

ROOT = Path(__file__).resolve().parents[2]


def test_grpc_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "protos.codegen", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_asyncapi_document_is_fresh() -> None:
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == asyncapi_document(), "run `make codegen`"


def test_every_topic_has_a_dead_letter_topic() -> None:
    names = dict(all_topic_names())
    for topic in INBOUND:
        assert topic in CATALOGUE
    for topic in CATALOGUE:
        assert names[topic.name] == topic.partitions
        assert names[topic.dlq] == 1
    assert set(dict(all_topic_names(1)).values()) == {1}

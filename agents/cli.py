"""The `shopstream` command: run the platform, migrate, create topics and admins, mint tokens."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from agents.common.logs import setup_logging
from agents.common.settings import Settings, SettingsError


def _with_running_platform(settings: Settings) -> Settings:
    """Fill DATABASE_URL and KAFKA_BROKER from a `shopstream run` of this directory, and
    JWT_SECRET and INTERNAL_SECRET from the ones it keeps there, if unset."""
    from agents.supervisor import INTERNAL_SECRET_FILE, JWT_SECRET_FILE, kept_secret, run_file

    settings = replace(
        settings,
        jwt_secret=settings.jwt_secret or kept_secret(settings.state_dir, JWT_SECRET_FILE),
        internal_secret=settings.internal_secret
        or kept_secret(settings.state_dir, INTERNAL_SECRET_FILE),
    )
    path = run_file(settings)
    if (settings.database_url and settings.kafka_broker) or not path.exists():
        return settings
    running = json.loads(path.read_text())
    return replace(
        settings,
        database_url=settings.database_url or running["database_url"],
        kafka_broker=settings.kafka_broker or running["kafka_broker"],
    )


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from agents.supervisor import run

    if args.broker:
        settings = replace(settings, embedded_broker=args.broker)
    if args.kafka_nodes:
        settings = replace(settings, embedded_kafka_nodes=args.kafka_nodes)
    return run(settings, demo=not args.no_demo)


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common.migrate import migrate

    applied = asyncio.run(migrate(settings.require_database()))
    print(f"applied: {', '.join(applied)}" if applied else "nothing to apply")
    return 0


def _topics_create(settings: Settings, args: argparse.Namespace) -> int:
    from topics import all_topics
    from topics.admin import ensure_topics

    report = asyncio.run(
        ensure_topics(
            settings.require_kafka(),
            all_topics(settings.topic_partitions),
            replication=args.replication or settings.kafka.replication_factor,
            security=settings.kafka_security,
        )
    )
    print(f"created: {', '.join(report.created)}" if report.created else "all topics exist")
    for change in report.changed:
        print(f"changed: {change}")
    for difference in report.differs:
        print(f"shopstream: left as it is: {difference}", file=sys.stderr)
    return 0


def _topics_asyncapi(settings: Settings, args: argparse.Namespace) -> int:
    from topics.asyncapi import asyncapi_document

    print(json.dumps(asyncapi_document(), indent=2))
    return 0


def _principal(text: str) -> tuple[str, str]:
    from topics.acls import PRINCIPALS

    role, sep, principal = text.partition("=")
    if not sep or role not in PRINCIPALS or not principal.startswith("User:"):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give ROLE=User:NAME, ROLE one of {', '.join(PRINCIPALS)}"
        )
    return role, principal


def _topics_acls(settings: Settings, args: argparse.Namespace) -> int:
    from topics.acls import create_acls, default_principals, kafka_acls_script

    principals = default_principals() | dict(args.principal)
    if not args.apply:
        print(kafka_acls_script(principals), end="")
        return 0
    count = asyncio.run(
        create_acls(settings.require_kafka(), principals, security=settings.kafka_security)
    )
    print(f"{count} ACLs in place")
    return 0


def _dev_token(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.auth import mint_token

    token = mint_token(settings, sub=args.sub, role=args.role, ttl_s=args.ttl)
    print(f"# a {args.role} access token for local use, valid {args.ttl} s:", file=sys.stderr)
    print(token)
    return 0


def _internal_secret(settings: Settings) -> str:
    """INTERNAL_SECRET, or the one `shopstream run` keeps in the state folder; "" if neither."""
    path = settings.state_dir / "internal-secret"
    if settings.internal_secret or not path.exists():
        return settings.internal_secret
    return path.read_text().strip()


def _command_key(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common.command_signing import producer_key

    secret = _internal_secret(settings)
    if not secret:
        raise SettingsError("INTERNAL_SECRET is not set (nor kept by a `shopstream run` here)")
    try:
        key = producer_key(secret, args.producer)
    except ValueError as e:
        raise SettingsError(str(e)) from None
    print(f"# the command-signing key of producer {args.producer!r}, hex:", file=sys.stderr)
    print(key.hex())
    return 0


def _create_admin(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common.db import create_pool
    from agents.users.errors import AccountExists
    from agents.users.passwords import Passwords
    from agents.users.service import IdentityService

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        print(
            "shopstream: give the password on a terminal or with --password-stdin", file=sys.stderr
        )
        return 2
    if not 6 <= len(password) <= 100:
        print("shopstream: the password must have 6 to 100 characters", file=sys.stderr)
        return 2

    async def create() -> tuple[int, bool]:
        pool = await create_pool(settings.require_database(), max_size=1)
        try:
            service = IdentityService(pool, settings, Passwords(settings.auth))
            full_name = args.full_name or args.email.split("@")[0]
            user, created = await service.create_admin(
                args.email, password, full_name, promote_existing=args.promote_existing
            )
            return user.id, created
        finally:
            await pool.close()

    try:
        user_id, created = asyncio.run(create())
    except AccountExists as e:
        print(
            f"shopstream: {e}, and nothing was changed. If it is yours to take over, run again "
            "with --promote-existing: it gets this password and the admin role, and every "
            "session of whoever holds it now ends",
            file=sys.stderr,
        )
        return 1
    if created:
        print(f"created admin {args.email} (user {user_id})")
    else:
        print(f"promoted admin {args.email} (user {user_id}): new password, sessions revoked")
    return 0


def _dlq_topic(name: str) -> str:
    if not name.endswith(".dlq"):
        raise argparse.ArgumentTypeError(f"{name!r} is not a dead-letter topic (no .dlq ending)")
    return name


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return n


def _dlq_call(settings: Settings, call: Callable[[str], Coroutine[Any, Any, int]]) -> int:
    """Run one dlq command against the broker; a bad argument is 2, a broker failure 1."""
    from aiokafka.errors import KafkaError

    from agents.common.dlq import DlqError

    bootstrap = settings.require_kafka()
    try:
        return asyncio.run(call(bootstrap))
    except DlqError as e:
        print(f"shopstream: {e}", file=sys.stderr)
        return 2
    except (KafkaError, TimeoutError, OSError) as e:
        print(f"shopstream: the broker at {bootstrap} failed: {e!r}", file=sys.stderr)
        return 1


def _dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common import dlq

    async def call(bootstrap: str) -> int:
        summaries = await dlq.summarize(
            bootstrap, args.topics or None, security=settings.kafka_security
        )
        if args.json:
            print(json.dumps([s.to_json() for s in summaries], indent=2))
        else:
            print(dlq.format_summaries(summaries))
        return 0

    return _dlq_call(settings, call)


def _dlq_show(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common import dlq

    async def call(bootstrap: str) -> int:
        messages, total = await dlq.show(
            bootstrap,
            args.topic,
            partition=args.partition,
            offset=args.offset,
            limit=args.limit,
            security=settings.kafka_security,
        )
        if args.json:
            shown = [m.to_json() for m in messages]
            print(json.dumps({"topic": args.topic, "total": total, "messages": shown}, indent=2))
            return 0
        for m in messages:
            print(dlq.format_message(m))
        print(f"# {len(messages)} shown of {total} in {args.topic}", file=sys.stderr)
        return 0

    return _dlq_call(settings, call)


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    from agents.common import dlq

    async def call(bootstrap: str) -> int:
        offsets = None if args.all else args.offsets
        messages = await dlq.select(
            bootstrap,
            args.topic,
            partition=args.partition,
            offsets=offsets,
            security=settings.kafka_security,
        )
        secret = _internal_secret(settings)
        results = await dlq.replay(
            bootstrap,
            messages,
            dry_run=args.dry_run,
            security=settings.kafka_security,
            resign=dlq.resigner(secret) if secret else None,
        )
        if args.json:
            print(json.dumps([r.to_json() for r in results], indent=2))
        else:
            for r in results:
                print(dlq.format_replay(r, dry_run=args.dry_run))
            if not results:
                print(f"nothing to replay in {args.topic}")
        return 1 if any(r.error is not None for r in results) else 0

    return _dlq_call(settings, call)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shopstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole platform (gateway on :8080)")
    run.add_argument("--no-demo", action="store_true", help="do not load the demo catalogue")
    run.add_argument(
        "--broker",
        choices=("tansu", "kafka"),
        help="the broker to start when KAFKA_BROKER is unset (SHOPSTREAM_BROKER; default tansu)",
    )
    run.add_argument(
        "--kafka-nodes",
        type=int,
        choices=(1, 3),
        help="Apache Kafka nodes to start with --broker kafka (SHOPSTREAM_KAFKA_NODES; default 1)",
    )
    run.set_defaults(func=_run)
    sub.add_parser("migrate", help="apply the SQL migrations (DATABASE_URL)").set_defaults(
        func=_migrate
    )
    topics = sub.add_parser("topics", help="the topic catalogue").add_subparsers(
        dest="topics_command", required=True
    )
    create = topics.add_parser(
        "create",
        help="create missing topics and set their configs (KAFKA_BROKER)",
    )
    create.add_argument(
        "--replication",
        type=_count,
        default=0,
        help="replicas of each topic (KAFKA_REPLICATION_FACTOR; default: the catalogue's, 3), "
        "capped to the brokers the cluster has",
    )
    create.set_defaults(func=_topics_create)
    topics.add_parser("asyncapi", help="print the AsyncAPI document").set_defaults(
        func=_topics_asyncapi
    )
    acls = topics.add_parser(
        "acls",
        help="print the kafka-acls.sh commands that grant each process its topics, or --apply",
    )
    acls.add_argument(
        "--principal",
        type=_principal,
        action="append",
        default=[],
        metavar="ROLE=User:NAME",
        help="the principal of a role (default User:shopstream-<role>, User:partner)",
    )
    acls.add_argument(
        "--apply",
        action="store_true",
        help="create them on KAFKA_BROKER, as the (super) user KAFKA_SASL_*/KAFKA_SSL_* give",
    )
    acls.set_defaults(func=_topics_acls)
    users = sub.add_parser("users", help="accounts").add_subparsers(
        dest="users_command", required=True
    )
    admin = users.add_parser(
        "create-admin",
        help="create an admin account (an existing one only with --promote-existing)",
    )
    admin.add_argument("--email", required=True)
    admin.add_argument("--full-name", default="")
    admin.add_argument(
        "--promote-existing",
        action="store_true",
        help="if an account has this email, take it over: set the password, make it admin and "
        "revoke its sessions (without this flag an existing account is refused)",
    )
    admin.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else prompt on a terminal)",
    )
    admin.set_defaults(func=_create_admin)
    token = sub.add_parser("dev-token", help="print a signed access token (last line)")
    token.add_argument("--role", choices=["user", "admin"], default="admin")
    token.add_argument("--sub", default="dev-admin", help="the token's subject (user id)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.set_defaults(func=_dev_token)
    key = sub.add_parser(
        "command-key",
        help="print the key a named producer (a partner feed) signs its commands with (last line)",
    )
    key.add_argument("producer", help="the producer's name, e.g. partner-feed")
    key.set_defaults(func=_command_key)
    _dlq_parser(sub)
    return p


def _dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="inspect and replay the dead-letter topics (KAFKA_BROKER, or the running platform's)",
        description="A message that fails for a reason retrying cannot fix is kept, unchanged, "
        "on its topic's <topic>.dlq with the reason in the x-dlq-reason header.",
    ).add_subparsers(dest="dlq_command", required=True)
    ls = dlq.add_parser("list", help="every .dlq topic: how many messages, the newest reason")
    ls.add_argument("topics", nargs="*", type=_dlq_topic, metavar="TOPIC.dlq")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_dlq_list)
    show = dlq.add_parser("show", help="the messages of a dead-letter topic")
    show.add_argument("topic", type=_dlq_topic, metavar="TOPIC.dlq")
    show.add_argument("--limit", type=_count, default=50, help="at most this many (50)")
    show.add_argument(
        "--offset", type=_count, default=None, help="from this offset on (in each partition)"
    )
    show.add_argument("--partition", type=int, default=None, help="only this partition")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(func=_dlq_show)
    replay = dlq.add_parser(
        "replay",
        help="send dead-lettered messages back to their original topic",
        description="Re-produce the chosen messages to their original topic (x-dlq-topic) with "
        "the same key and value, their own headers without the x-dlq-* ones, and "
        "x-dlq-replayed-from: <dlq topic>:<partition>:<offset>; acks=all, every send awaited, "
        "exit code 1 if any failed. The dead-letter topic is left as it is, so a replay can be "
        "repeated: that is safe, because the platform applies a command or an event once by its "
        "id (the command ledger keeps every command and event id it handled for "
        "IDEMPOTENCY_KEY_TTL_S, a day by default), so a message replayed twice within it does "
        "its work once. Fix the cause first, or the message comes back "
        "to the dead-letter topic.",
    )
    replay.add_argument("topic", type=_dlq_topic, metavar="TOPIC.dlq")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--offset",
        dest="offsets",
        type=int,
        action="append",
        metavar="O",
        help="replay the message at this offset (repeatable)",
    )
    which.add_argument("--all", action="store_true", help="replay every message")
    replay.add_argument(
        "--partition",
        type=int,
        default=None,
        help="the partition of --offset (needed when the topic has several); with --all, "
        "only this partition",
    )
    replay.add_argument("--dry-run", action="store_true", help="print what would be sent")
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.set_defaults(func=_dlq_replay)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        print(f"shopstream: {e}", file=sys.stderr)
        return 2
    if args.command != "run":
        setup_logging("shopstream", settings.log_level, "text")
        settings = _with_running_platform(settings)
    try:
        code: int = args.func(settings, args)
    except SettingsError as e:
        logging.getLogger("shopstream").error("%s", e)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``tpi-cds``: the offline command, answering a captured request as the service will."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from cards import PolicyError, TerminologyError
from cards.policy import PROFILES
from cds_service.evaluation import (
    InvalidRequestError,
    MissingPrefetchError,
    evaluate_request,
    response_json,
)
from cds_service.services import discovery_document
from cds_service.settings import EngineSettings, SettingsError, load_terminology

EXIT_INVALID_REQUEST = 1
EXIT_CONFIGURATION = 2
EXIT_MISSING_PREFETCH = 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpi-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("discovery", help="print the CDS Hooks discovery document")
    commands.add_parser("serve", help="run the web service (gunicorn) from the environment")
    feedback = commands.add_parser("feedback", help="read stored feedback")
    feedback.add_argument(
        "action",
        choices=["export", "stats"],
        help="export: JSON lines of every entry; stats: per service and topic",
    )
    evaluate = commands.add_parser("evaluate", help="answer a CDS Hooks request body")
    evaluate.add_argument("request", help="a CDS Hooks request JSON file, or - for stdin")
    evaluate.add_argument("--today", type=_iso_date, help="the date to judge by (YYYY-MM-DD)")
    evaluate.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="the site's default policy profile, used when the request's coverage does not decide",
    )
    args = parser.parse_args(argv)
    try:
        settings = EngineSettings.from_env(os.environ)
        if getattr(args, "profile", None):
            settings = EngineSettings(
                profile=args.profile,
                policy_overrides=settings.policy_overrides,
                valueset_dir=settings.valueset_dir,
                timezone=settings.timezone,
            )
        engine = settings.build_engine()
    except (SettingsError, PolicyError, TerminologyError) as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    if args.command == "serve":
        return _serve()
    if args.command == "feedback":
        return _feedback(args.action)
    if args.command == "discovery":
        print(json.dumps(discovery_document(load_terminology(settings.valueset_dir)), indent=1))
        return 0
    try:
        body = _read_request(args.request)
        response = evaluate_request(body, today=args.today or settings.today(), engine=engine)
    except InvalidRequestError as exc:
        return _fail(f"not a CDS Hooks request: {exc}", EXIT_INVALID_REQUEST)
    except MissingPrefetchError as exc:
        return _fail(str(exc), EXIT_MISSING_PREFETCH)
    print(response_json(response))
    return 0


def _serve() -> int:
    from cds_service.serving import serve

    try:
        serve()
    except SettingsError as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    return 0


def _feedback(action: str) -> int:
    from cds_service.settings import ServiceSettings
    from cds_service.store import FeedbackStore, StoreUnavailableError

    try:
        store = FeedbackStore(ServiceSettings.from_env(os.environ).store_url)
        store.create_schema()
        if action == "export":
            for entry in store.export():
                print(json.dumps(entry, ensure_ascii=False))
        else:
            print(json.dumps(store.stats(), indent=1, ensure_ascii=False))
    except SettingsError as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    except StoreUnavailableError as exc:
        return _fail(str(exc), EXIT_CONFIGURATION)
    return 0


def _read_request(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read {source}: {exc}") from exc
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"malformed JSON at line {exc.lineno}: {exc.msg}") from exc


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _fail(message: str, code: int) -> int:
    print(f"tpi-cds: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

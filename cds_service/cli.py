"""tpi-cds: decision support for trigger point injections, as a CDS Hooks 2.0 service.

Run the web service (serve), answer a saved CDS Hooks request the way the service would
(evaluate), print the discovery document, read the feedback clinicians sent, or screen a
population's Bulk Data export for patients to follow up (screen).
"""

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
from cds_service.screening import command as screen_command
from cds_service.services import discovery_document
from cds_service.settings import EngineSettings, SettingsError, load_terminology

EXIT_INVALID_REQUEST = 1
EXIT_CONFIGURATION = 2
EXIT_MISSING_PREFETCH = 3


SERVE_SETTINGS = """settings (environment, or the TOML file of --config / TPI_CDS_CONFIG):
  TPI_CDS_BIND                 host:port to listen on (default 127.0.0.1:8080)
  TPI_CDS_WORKERS              worker processes (default 2 x usable CPUs + 1)
  TPI_CDS_DATA_DIR             folder of the SQLite feedback store (default ./data)
  TPI_CDS_DATABASE_URL         feedback store URL instead (postgresql://...)
  TPI_CDS_AUTH_ISSUERS         trusted EHR issuers (JSON list); TPI_CDS_AUTH_SANDBOX=true
  TPI_CDS_AUTH_DISABLED        true: accept unsigned calls (local trial only)
  TPI_CDS_FHIR_SERVER_ALLOWLIST  FHIR servers the service may fetch from
  TPI_CDS_PROFILE              site default payer profile (medicare | commercial)
The README's configuration table lists every setting."""
EVALUATE_EXITS = """exit codes:
  0  the response was printed (it may hold no cards)
  1  the input is not a CDS Hooks request (one line on stderr)
  2  the configuration is wrong (one line on stderr)
  3  the prefetch lacks data the rules need (the service would answer 412)"""


def main(argv: list[str] | None = None) -> int:
    """The command line; a closed output pipe (``... | head``) ends it quietly."""
    try:
        return _main(argv)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="tpi-cds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tpi-cds {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("discovery", help="print the CDS Hooks discovery document")
    serve = commands.add_parser(
        "serve",
        help="run the web service (gunicorn)",
        description="Run the CDS Hooks web service with gunicorn.",
        epilog=SERVE_SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--bind", help="host:port to listen on (TPI_CDS_BIND)")
    serve.add_argument("--workers", type=int, help="worker processes (TPI_CDS_WORKERS)")
    serve.add_argument("--config", help="a TOML configuration file (TPI_CDS_CONFIG)")
    feedback = commands.add_parser("feedback", help="read stored feedback")
    feedback.add_argument(
        "action",
        choices=["export", "stats"],
        help="export: JSON lines of every entry; stats: per service and topic",
    )
    memory = commands.add_parser(
        "memory",
        help="card memory: what is remembered, or a reset",
        description="Card memory: cards sent (no repeat within an ordering session) and "
        "snoozes. It holds keyed hashes, rule ids and times, never a patient id.",
    )
    memory_actions = memory.add_subparsers(dest="action", required=True)
    memory_actions.add_parser(
        "stats", help="entries, snoozes by topic and the oldest entry, as JSON"
    )
    forget = memory_actions.add_parser(
        "forget", help="forget every remembered card and snooze (a reset)"
    )
    forget.add_argument(
        "--all", action="store_true", required=True, help="required: everything is forgotten"
    )
    evaluate = commands.add_parser(
        "evaluate",
        help="answer a saved CDS Hooks request as the service would",
        description="Print the response the service would send for a CDS Hooks request "
        "(no fetching, no card memory: every card is printed).",
        epilog=EVALUATE_EXITS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("request", help="a CDS Hooks request JSON file, or - for stdin")
    add_judging_options(evaluate)
    report = commands.add_parser(
        "report",
        help="write the governance report (card gallery, rule catalogue, feedback analytics)",
        description="Write OUT_DIR/index.html: a static page for a CDS governance committee.",
    )
    report.add_argument("out_dir", help="the folder to write index.html into")
    report.add_argument("--config", help="a TOML configuration file (TPI_CDS_CONFIG)")
    screen_command.add_parser(commands, add_judging_options)
    args = parser.parse_args(argv)
    if args.command == "report":
        return _report(Path(args.out_dir), args.config)
    if args.command == "serve":
        for flag, variable in (("bind", "BIND"), ("workers", "WORKERS"), ("config", "CONFIG")):
            if getattr(args, flag) is not None:
                os.environ[f"TPI_CDS_{variable}"] = str(getattr(args, flag))
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
    if args.command == "memory":
        return _memory(args.action)
    if args.command == "screen":
        return screen_command.run(args, settings)
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
    from cds_service.store import (
        FeedbackStore,
        StoreConfigurationError,
        StoreUnavailableError,
        store_label,
    )

    try:
        url = ServiceSettings.from_env(os.environ).store_url
        print(f"tpi-cds: reading the feedback store {store_label(url)}", file=sys.stderr)
        store = FeedbackStore.open_existing(url)
        if action == "export":
            for entry in store.export():
                print(json.dumps(entry, ensure_ascii=False))
        else:
            print(json.dumps(store.stats(), indent=1, ensure_ascii=False))
    except (SettingsError, StoreConfigurationError) as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    except StoreUnavailableError as exc:
        return _fail(str(exc), EXIT_CONFIGURATION)
    return 0


def _memory(action: str) -> int:
    """Memory where the service keeps it: Redis when TPI_CDS_REDIS_URL is set, else the
    SQL store (which must already exist: nothing is created by reading it)."""
    import time

    from cds_service.memory import RedisMemory, SqlMemory
    from cds_service.settings import ServiceSettings
    from cds_service.store import (
        FeedbackStore,
        StoreConfigurationError,
        StoreUnavailableError,
        store_label,
    )

    try:
        settings = ServiceSettings.from_env(os.environ)
        if settings.redis_url:
            print(
                f"tpi-cds: card memory in Redis {store_label(settings.redis_url)}", file=sys.stderr
            )
            backend: RedisMemory | SqlMemory = RedisMemory(settings.redis_url)
        else:
            url = settings.store_url
            print(f"tpi-cds: card memory in {store_label(url)}", file=sys.stderr)
            backend = SqlMemory(FeedbackStore.open_existing(url))
        if action == "stats":
            print(json.dumps(backend.stats(time.time()), indent=1))
        else:
            removed = backend.forget_all()
            print(json.dumps({"forgotten": removed}))
    except (SettingsError, StoreConfigurationError) as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    except StoreUnavailableError as exc:
        return _fail(str(exc), EXIT_CONFIGURATION)
    except Exception as exc:  # the store answered with an error: say which, not a traceback
        return _fail(f"card memory cannot be read: {type(exc).__name__}", EXIT_CONFIGURATION)
    return 0


def _report(out_dir: Path, config: str | None) -> int:
    from cds_service.report import GalleryError, ReportInput, write_report
    from cds_service.settings import ServiceSettings
    from cds_service.store import store_label

    environ = dict(os.environ)
    if config:
        environ["TPI_CDS_CONFIG"] = config
    try:
        service = ServiceSettings.from_env(environ)
        source = ReportInput(service.engine, service.store_url, environ.get("TPI_CDS_CONFIG"))
        print(
            f"tpi-cds: reading the feedback store {store_label(source.store_url)}", file=sys.stderr
        )
        path = write_report(out_dir, source)
    except (SettingsError, PolicyError, TerminologyError) as exc:
        return _fail(f"configuration: {exc}", EXIT_CONFIGURATION)
    except GalleryError as exc:
        return _fail(f"report not written: {exc}", EXIT_CONFIGURATION)
    except OSError as exc:
        return _fail(f"report not written: {out_dir}: {exc.strerror}", EXIT_CONFIGURATION)
    print(path)
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


def add_judging_options(parser: argparse.ArgumentParser) -> None:
    """``--today`` and ``--profile``: what ``evaluate`` and ``screen`` judge by."""
    parser.add_argument(
        "--today",
        type=_iso_date,
        help="the date to judge by, YYYY-MM-DD (default: today in TPI_CDS_TIMEZONE, UTC)",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="the site's default policy profile, used when the patient's coverage does not decide",
    )


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tpi-cds")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _fail(message: str, code: int) -> int:
    print(f"tpi-cds: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

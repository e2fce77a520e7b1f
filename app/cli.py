"""`tessera` command line: `tessera serve [flags]` and `tessera admin reset-password`.

Flag errors are one line on stderr and exit code 2, before anything heavy is imported or loaded.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from engine.args import ArgsError, ServerArgs
from engine.args_cli import add_cli_args, args_from_namespace


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: operators read this in container logs.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tessera", description="Tessera LLM inference server")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    serve = sub.add_parser("serve", help="serve a model over the OpenAI and native APIs")
    add_cli_args(serve)
    admin = sub.add_parser("admin", help="admin console maintenance")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, parser_class=_Parser)
    reset = admin_sub.add_parser("reset-password", help="set a new random admin password and print it")
    reset.add_argument("--data-dir", default=os.environ.get("TESSERA_DATA_DIR", ServerArgs.data_dir))
    reset.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    migrate = admin_sub.add_parser("migrate", help="bring the console database to the current schema")
    migrate.add_argument("--data-dir", default=os.environ.get("TESSERA_DATA_DIR", ServerArgs.data_dir))
    migrate.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    return parser


def _serve(ns: argparse.Namespace) -> int:
    try:
        args = args_from_namespace(ns)
        from app.chat_template import ChatTemplateError, load_chat_template

        try:
            load_chat_template(args.chat_template)
        except ChatTemplateError as exc:
            raise ArgsError(str(exc)) from None
        from app.startup_checks import check_startup

        check_startup(args)  # before the data dir or the database is touched
    except ArgsError as exc:
        print(f"tessera serve: error: {exc}", file=sys.stderr)
        return 2
    if args.node_rank > 0:  # a worker node of multi-node tensor parallelism: ranks only, no HTTP
        from app.headless_node import run_headless_node
        from app.server import configure_logging

        configure_logging(args.log_level)
        return run_headless_node(args)
    flag_args = args.to_dict()
    if not args.disable_admin:
        # A deployment saved in the console wins over flags/env for the fields it edits.
        from app.admin import resolve_startup_args

        try:
            startup = resolve_startup_args(flag_args, args.data_dir, os.environ.get("DATABASE_URL"))
            args = ServerArgs.from_dict(startup.args)
        except ArgsError as exc:
            print(f"tessera serve: error: saved deployment is invalid: {exc}", file=sys.stderr)
            return 2
    from app.server import run_server

    return run_server(args, flag_args=flag_args)


def _admin(ns: argparse.Namespace) -> int:
    if ns.admin_command == "reset-password":
        from app.admin.cli import NoDatabaseError, reset_password

        try:
            password = reset_password(ns.data_dir, ns.database_url)
        except NoDatabaseError as exc:
            print(f"tessera admin reset-password: error: {exc}", file=sys.stderr)
            return 2
        print(f"new admin password: {password}")
        print(f"(also written to {os.path.join(ns.data_dir, 'admin_password')}; it must be changed at next login)")
        return 0
    if ns.admin_command == "migrate":
        from app.admin.cli import migrate

        try:
            revision = migrate(ns.data_dir, ns.database_url)
        except Exception as exc:  # an operator-facing command: one line, never a traceback
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            print(f"tessera admin migrate: error: {reason}", file=sys.stderr)
            return 1
        print(f"database schema at {revision}")
        return 0
    return 2


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.command == "serve":
        return _serve(ns)
    return _admin(ns)


if __name__ == "__main__":
    sys.exit(main())

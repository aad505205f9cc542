"""`tracelake token new`: a bearer token for receivers.otlp.auth, and the entry that stores only its SHA-256."""

from __future__ import annotations

import argparse
import sys

from core.command import SubParsers


def cmd_token_new(args: argparse.Namespace) -> int:
    """A new random token, printed once, and the tokens-file entry that holds only its SHA-256."""
    import yaml
    from pydantic import ValidationError

    from pipeline.config.loader import pydantic_issues
    from pipeline.config.model import TokenConfig
    from pipeline.receiver.auth import new_token, token_digest

    token = new_token()
    entry: dict[str, object] = {"name": args.name, "sha256": token_digest(token).hex(), "tenant": args.tenant}
    if args.may_write:
        entry["tenants"] = "*" if args.may_write == ["*"] else args.may_write
    try:
        TokenConfig.model_validate(entry)
    except ValidationError as err:
        for issue in pydantic_issues(err, ""):
            print(f"tracelake token new: {issue}", file=sys.stderr)
        return 2
    print(f"token (shown once; give it to the client, keep it nowhere else): {token}")
    print("entry for receivers.otlp.auth.tokens or the tokens file:")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def add_commands(sub: SubParsers) -> None:
    tk = sub.add_parser("token", help="bearer tokens for receivers.otlp.auth")
    tk_sub = tk.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    tn = tk_sub.add_parser("new", help="a new random token and its tokens-file entry (only the SHA-256 is stored)")
    tn.add_argument("--tenant", required=True, help="the tenant stamped on everything the token sends")
    tn.add_argument("--name", required=True, help="what logs and metrics call the token (never the token itself)")
    tn.add_argument(
        "--may-write",
        action="append",
        metavar="TENANT",
        help="a further tenant the client may name (X-Scope-OrgID or tenant attributes); '*' for any; repeatable",
    )
    tn.set_defaults(func=cmd_token_new)

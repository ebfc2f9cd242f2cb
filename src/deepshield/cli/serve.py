"""`deepshield serve`: the web app and REST API."""

from __future__ import annotations

import argparse

from deepshield.cli.args import model_argument, port_number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the web app and REST API", description="Serve the web page and the /v1 REST API."
    )
    parser.add_argument(
        "--host",
        type=listen_address,
        default="127.0.0.1",
        help="address to listen on (default %(default)s; 0.0.0.0: every interface)",
    )
    parser.add_argument(
        "--port", type=port_number, default=8000, help="port to listen on (default %(default)s; 0: any free one)"
    )
    model_argument(parser)
    parser.set_defaults(run=run)


def listen_address(text: str) -> str:
    """--host: "$HOST" unset was refused only once the server started, as 'cannot serve on :8000: Name or
    service not known', naming no host."""
    if not text:
        raise argparse.ArgumentTypeError("an empty address names no interface (an unset shell variable?)")
    return text


def run(args: argparse.Namespace) -> int:
    from deepshield.serving.server import serve

    serve(host=args.host, port=args.port, model=args.model)
    return 0

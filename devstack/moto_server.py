"""moto (the AWS stand-in) served by hypercorn: one port, HTTP/1.1 and cleartext HTTP/2.

The KCL's Kinesis client speaks HTTP/2 only, which moto's own werkzeug server cannot answer; hypercorn
serving moto's WSGI app answers both, for Kinesis, DynamoDB, SQS, S3 and Firehose alike.

    python -m devstack.moto_server --port 4566      (binds 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Iterable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app


def build_app() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    moto = DomainDispatcherApplication(create_backend_app)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        # hypercorn's WSGI wrapper sends the response head with the first body chunk, so a response
        # with no chunks at all (moto's HEAD answers) would fail; moto's bodies are in memory anyway.
        result = moto(environ, start_response)
        try:
            chunks = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return chunks or [b""]

    return app


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None  # moto's access log is noise; errors still go to stderr
    config.errorlog = "-"
    config.keep_alive_timeout = 75  # longer than the KCL's idle polling
    config.h2_max_concurrent_streams = 1000
    config.wsgi_max_body_size = 64 * 1024 * 1024  # PutRecords may carry 5 MiB, S3 puts more
    return config


async def _serve(host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(build_app(), hypercorn_config(host, port), shutdown_trigger=stop.wait, mode="wsgi")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()

"""moto (the AWS stand-in) served by hypercorn: one port, HTTP/1.1 and cleartext HTTP/2.

The KCL's Kinesis client speaks HTTP/2 only, which moto's own werkzeug server cannot answer; hypercorn
serving moto's WSGI app answers both, for Kinesis, DynamoDB, SQS, S3 and Firehose alike.

    python -m devstack.moto_server --port 4566      (binds 127.0.0.1 only)

A dev and test tool only (never in the image): with `STREAMKPI_MOTO_CALL_LOG=<file>` (or `--call-log`) it
appends one JSON line per AWS request to that file, the call log `tests/integration/test_iam.py` derives
the least-privilege IAM policies from (`docs/iam/`). It sees the calls of every runtime alike: the Python
processor and tools (boto3, pynamodb) and the KCL daemon (AWS SDK for Java v2), which no in-process hook
reaches. Each line: the caller's access key id and the service (from the SigV4 credential scope), the
operation (`X-Amz-Target` for the JSON protocols, `Action` for the query protocol, the REST request's shape
for S3), the HTTP status, the user agent's first word, and the resource names the request carries.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from hypercorn.asyncio import serve
from hypercorn.config import Config
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

CALL_LOG_ENV = "STREAMKPI_MOTO_CALL_LOG"
WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


def build_app(call_log: str | None = None) -> WsgiApp:
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

    return CallRecorder(app, Path(call_log)) if call_log else app


# -- the call log -------------------------------------------------------------------------------------

_RPC_V2_PATH = re.compile(r"^/service/[^/]+/operation/([^/]+)$")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]*/([^/]*)/([^/]*)/")
# Request fields that name a resource (JSON protocols); SQS query bodies carry the same names.
_NAMED = ("StreamName", "StreamARN", "ConsumerARN", "ConsumerName", "TableName", "IndexName", "QueueUrl",
          "QueueName", "DeliveryStreamName", "Namespace")  # fmt: skip


class CallRecorder:
    """WSGI middleware: one JSON line per request to `path` (see the module's docstring), then moto answers."""

    def __init__(self, app: WsgiApp, path: Path) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            line = describe_call(environ, body)
        except Exception as exc:  # a call the log cannot read must still be answered, and show up
            line = {"error": f"{type(exc).__name__}: {exc}", "path": environ.get("PATH_INFO", "")}
        status: list[str] = []

        def recording_start_response(code: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(code)
            return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

        try:
            return self.app(environ, recording_start_response)
        finally:  # also when moto raises (it does for what it cannot serve, e.g. SubscribeToShard): a 500
            if line is not None:
                line["status"] = int(status[0].split()[0]) if status else 500
                with self.lock, self.path.open("a") as out:
                    out.write(json.dumps(line, sort_keys=True) + "\n")


def describe_call(environ: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """What one request asked for: who, which service and operation, on which resources. None: not an AWS
    call (moto's own /moto-api, an unsigned probe)."""
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = _CREDENTIAL.search(auth) or _CREDENTIAL.search("Credential=" + query.get("X-Amz-Credential", [""])[0])
    if credential is None:
        return None
    access_key, region, service = credential.groups()
    agent = environ.get("HTTP_USER_AGENT", "").split(" ")[0]
    line: dict[str, Any] = {"accessKey": access_key, "region": region, "service": service, "agent": agent}
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if service == "s3":
        line.update(_s3_call(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), query, environ))
        return line
    if "gzip" in environ.get("HTTP_CONTENT_ENCODING", ""):  # the Java SDK compresses large PutMetricData bodies
        body = gzip.decompress(body)
    params: dict[str, Any] = {}
    rpc = _RPC_V2_PATH.match(environ.get("PATH_INFO", ""))
    if rpc:  # Smithy RPC v2 (CBOR): the operation is in the path; the CBOR body is not read
        line["operation"] = rpc.group(1)
    elif target:
        line["operation"] = target.rpartition(".")[2]
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
    else:  # the query protocol: Action=... in the form body or the query string
        form = {**query, **parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)}
        line["operation"] = form.get("Action", [""])[0]
        params = {key: values[0] for key, values in form.items()}
    line["params"] = _resource_params(params)
    return line


def _resource_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {name: params[name] for name in _NAMED if isinstance(params.get(name), str)}
    if isinstance(params.get("RequestItems"), dict):  # BatchGetItem, BatchWriteItem
        out["RequestItems"] = sorted(params["RequestItems"])
    if isinstance(params.get("TransactItems"), list):  # [(Put|Update|Delete|ConditionCheck|Get, table), ...]
        out["TransactItems"] = sorted(
            {(kind, spec.get("TableName", "")) for item in params["TransactItems"] for kind, spec in item.items()}
        )
    return out


def _s3_call(method: str, path: str, query: dict[str, list[str]], environ: dict[str, Any]) -> dict[str, Any]:
    """The S3 API operation of a path-style REST request (what boto3 sends to an IP endpoint)."""
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    params: dict[str, Any] = {"Bucket": bucket} if bucket else {}
    if key:
        params["Key"] = key
    if not bucket:
        return {"operation": "ListBuckets", "params": params}
    if key:
        if "uploadId" in query or "uploads" in query:
            operation = {"POST": "CompleteMultipartUpload" if "uploadId" in query else "CreateMultipartUpload",
                         "PUT": "UploadPart", "DELETE": "AbortMultipartUpload", "GET": "ListParts"}[method]  # fmt: skip
        elif method == "PUT" and "HTTP_X_AMZ_COPY_SOURCE" in environ:
            operation = "CopyObject"
            params["CopySource"] = unquote(environ["HTTP_X_AMZ_COPY_SOURCE"]).lstrip("/")
        else:
            subresource = next((name for name in ("tagging", "acl", "retention") if name in query), "")
            operation = {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject", "DELETE": "DeleteObject"}[
                method
            ] + {"tagging": "Tagging", "acl": "Acl", "retention": "Retention", "": ""}[subresource]
        return {"operation": operation, "params": params}
    subresource = next((name for name in sorted(query) if name in _BUCKET_SUBRESOURCES), "")
    if subresource:
        verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "POST": "Post"}[method]
        return {"operation": f"{verb}Bucket{_BUCKET_SUBRESOURCES[subresource]}", "params": params}
    if method == "POST" and "delete" in query:
        return {"operation": "DeleteObjects", "params": params}
    operation = {
        "GET": "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects",
        "HEAD": "HeadBucket",
        "PUT": "CreateBucket",
        "DELETE": "DeleteBucket",
    }.get(method, f"{method}Bucket")
    return {"operation": operation, "params": params}


_BUCKET_SUBRESOURCES = {"lifecycle": "LifecycleConfiguration", "location": "Location", "policy": "Policy",
                        "tagging": "Tagging", "versioning": "Versioning", "acl": "Acl", "cors": "Cors",
                        "notification": "NotificationConfiguration", "encryption": "Encryption",
                        "uploads": "MultipartUploads", "versions": "ObjectVersions"}  # fmt: skip


def hypercorn_config(host: str, port: int) -> Config:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None  # moto's access log is noise; errors still go to stderr
    config.errorlog = "-"
    config.keep_alive_timeout = 75  # longer than the KCL's idle polling
    config.h2_max_concurrent_streams = 1000
    config.wsgi_max_body_size = 64 * 1024 * 1024  # PutRecords may carry 5 MiB, S3 puts more
    return config


async def _serve(host: str, port: int, call_log: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(build_app(call_log), hypercorn_config(host, port), shutdown_trigger=stop.wait, mode="wsgi")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument(
        "--call-log",
        default=os.environ.get(CALL_LOG_ENV) or None,
        help=f"Append one JSON line per AWS request to this file (default ${CALL_LOG_ENV}; dev and test only).",
    )
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.call_log))


if __name__ == "__main__":
    main()

"""OTLP/gRPC `TraceService/Export` (grpcio). gzip requests are decompressed by gRPC itself.

The handler takes raw bytes (no deserializer) so the request is parsed once, here, and its
bytes can go to the bus unchanged.
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from pipeline.bus.base import BusRefused
from pipeline.receiver.auth import Authenticator, Caller, TenantDenied, Unauthenticated
from pipeline.receiver.intake import Intake, InvalidRequest

log = logging.getLogger("tracelake.receiver.grpc")

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


def _retry_info(seconds: float) -> bytes:
    whole = int(seconds)
    delay = Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return RetryInfo(retry_delay=delay).SerializeToString()


class GrpcReceiver:
    def __init__(
        self,
        intake: Intake,
        host: str,
        port: int,
        max_request_bytes: int,
        workers: int = 8,
        credentials: grpc.ServerCredentials | None = None,
        auth: Authenticator | None = None,
    ) -> None:
        """`credentials`: TLS (pipeline/receiver/tls.py), else plaintext. `auth`: bearer tokens required."""
        self.intake = intake
        self.auth = auth
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export,
                    request_deserializer=None,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if credentials is None:
                self.port = self._server.add_insecure_port(address)
            else:
                self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as e:
            raise OSError(f"cannot listen for OTLP/gRPC on {address}: {e}") from None
        self.address = f"{host}:{self.port}"

    def _caller(self, context: grpc.ServicerContext) -> Caller | None:
        """Who sent the call; aborts it with UNAUTHENTICATED (nothing read) when the token is missing or unknown."""
        if self.auth is None:
            return None
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            return self.auth.authenticate(
                metadata.get("authorization"), metadata.get("x-scope-orgid"), "grpc", context.peer()
            )
        except Unauthenticated as e:
            self.intake.unauthenticated("grpc")
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(e))
        return None  # not reached: abort raises

    def _export(self, body: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
        caller = self._caller(context)
        try:
            request = self.intake.parse(body)
            result = self.intake.accept(request, body, "grpc", caller=caller)
        except TenantDenied as e:
            if self.auth is not None:
                self.auth.denied("grpc", context.peer())
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except InvalidRequest as e:
            self.intake.invalid("grpc")
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except BusRefused as e:
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", _retry_info(e.retry_after)),))
            code = grpc.StatusCode.RESOURCE_EXHAUSTED if e.exhausted else grpc.StatusCode.UNAVAILABLE
            context.abort(code, e.reason)
        except Exception as e:  # a bad request must never take the process down
            log.exception("unexpected error handling OTLP/gRPC export")
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}")
        resp = ExportTraceServiceResponse()
        if result.rejected:
            resp.partial_success.rejected_spans = result.rejected
            resp.partial_success.error_message = result.message
        return resp

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float = 5.0) -> None:
        """Stop accepting new calls; calls in flight get `grace` seconds to finish."""
        self._server.stop(grace).wait()

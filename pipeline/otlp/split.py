"""Cut a serialized export request into one request per worker, by trace id, without decoding spans.

`tracelake run` gives each worker process a share of trace-id space, so that every span of a trace
meets in one process (tail sampling and trace summaries need whole traces). The receiver cuts each
request at the wire level: protobuf parses it down to its scopes with every span left as bytes
(`RawSpansRequest`, as the worker's columnar decode does), a span's trace id is read from its first
bytes, and the per-worker requests are serialized from those bytes. Resources and scopes are copied
into every share that has spans of theirs.
"""

from __future__ import annotations

import zlib

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from pipeline.otlp.wire import RawSpansRequest

# What OTLP encoders write first in a Span: field 1 (trace_id), length 16.
_TRACE_ID_PREFIX = b"\x0a\x10"


def share_of(trace_id: bytes, shares: int) -> int:
    """Which of `shares` workers owns a trace. CRC-32 rather than the raw id bytes: some SDKs put a
    timestamp or a constant in part of the id (X-Ray, custom generators)."""
    return zlib.crc32(trace_id) % shares


def _trace_id(span: bytes) -> bytes:
    if span[:2] == _TRACE_ID_PREFIX:
        return span[2:18]
    return Span.FromString(span).trace_id  # fields in another order: let protobuf find it


def split_by_share(raw: bytes, shares: int) -> list[tuple[int, bytes, int]]:
    """[(share, request bytes, spans)] for the shares that got spans, in share order.

    Raises google.protobuf.message.DecodeError when `raw` is not a request."""
    if shares == 1:
        request = RawSpansRequest.FromString(raw)
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return [(0, raw, n)] if n else []
    request = RawSpansRequest.FromString(raw)
    outs: dict[int, object] = {}
    counts = [0] * shares
    for rs in request.resource_spans:
        rs_copies: dict[int, object] = {}
        for ss in rs.scope_spans:
            ss_copies: dict[int, object] = {}
            for span in ss.spans:
                share = share_of(_trace_id(span), shares)
                target = ss_copies.get(share)
                if target is None:
                    out_rs = rs_copies.get(share)
                    if out_rs is None:
                        out = outs.get(share)
                        if out is None:
                            out = outs[share] = RawSpansRequest()
                        out_rs = rs_copies[share] = out.resource_spans.add()  # type: ignore[attr-defined]
                        out_rs.resource.CopyFrom(rs.resource)
                        out_rs.schema_url = rs.schema_url
                    target = ss_copies[share] = out_rs.scope_spans.add()  # type: ignore[attr-defined]
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                target.spans.append(span)  # type: ignore[attr-defined]
                counts[share] += 1
    return [(share, outs[share].SerializeToString(), counts[share]) for share in sorted(outs)]  # type: ignore[attr-defined]

"""`tracelake validate`: an offloader that runs before redaction stores unredacted payloads."""

from __future__ import annotations

from collections.abc import Sequence

from core.processor import processor_type

OFFLOAD = "offload_artifacts"
REDACT = "redact_pii"


def order_warnings(process_ids: Sequence[str], ingest_ids: Sequence[str] = ()) -> list[str]:
    """One warning per offload_artifacts instance that some redact_pii instance runs after.

    The ingest chain runs before the process chain, so pass it too when it has processors: a
    redact_pii in ingest protects an offloader in process."""
    chain = [("ingest", i, pid) for i, pid in enumerate(ingest_ids)] + [
        ("process", i, pid) for i, pid in enumerate(process_ids)
    ]
    warnings = []
    for pos, (stage, i, pid) in enumerate(chain):
        if processor_type(pid) != OFFLOAD:
            continue
        later = [(s, j, rid) for s, j, rid in chain[pos + 1 :] if processor_type(rid) == REDACT]
        if not later:
            continue
        s, j, rid = later[0]
        warnings.append(
            f"pipelines.traces.{stage}.{i}: {pid!r} runs before {rid!r} (pipelines.traces.{s}.{j}): it stores "
            f"values as it receives them, so unredacted prompts land in the artifact store and {rid!r} only "
            f"sees references; put {rid!r} first"
        )
    return warnings

"""A ClientApp mod that writes the site's audit trail: each job received, each reply or refusal."""

import hashlib
import json
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable

from client.audit_log import AuditEntry, AuditLog
from client.flower_internals import RECORD_KEY_CONFIGS, Key, recorddict_to_proto
from client.integrity_key import read_integrity_key
from client.site_context import site_state_dir
from client.site_limits import INTEGRITY_KEY
from common import message_keys as keys

__all__ = ["AUDIT_FILE", "audit_mod"]

AUDIT_FILE = "audit-log.sqlite"


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _round(msg: Message) -> int:
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else 0


def _kind(msg: Message) -> str:
    secagg = msg.content.config_records.get(RECORD_KEY_CONFIGS)
    stage = secagg.get(Key.STAGE) if secagg else None
    suffix = f"/secagg-{stage}" if isinstance(stage, str) else ""
    return f"{msg.metadata.message_type}{suffix}"


def _reported_epsilon(reply: Message) -> float | None:
    if reply.has_error():
        return None
    records: list[MetricRecord | ConfigRecord] = [
        *reply.content.metric_records.values(),
        *reply.content.config_records.values(),
    ]
    for record in records:
        value = record.get(keys.EPSILON)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _log(context: Context) -> AuditLog | None:
    state_dir = site_state_dir(context)
    if state_dir is None:  # a site started without a state folder keeps no audit trail
        return None
    key_file = context.node_config.get(INTEGRITY_KEY)
    key = None if key_file is None else read_integrity_key(Path(str(key_file)))
    return AuditLog(state_dir / AUDIT_FILE, key=key)


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Log the run's config on its first message, then every reply, error and refusal.

    A reply is logged with its size, SHA-256 and reported epsilon; an error reply or an
    exception (a refused job or round: limits, budget, a ledger that fails verification)
    with its reason, before the exception goes on to Flower.
    """
    log = _log(context)
    if log is None:
        return call_next(msg, context)
    run_id = str(msg.metadata.run_id)
    job = str(context.run_config.get("name", "?"))
    if not log.has_job(run_id):
        config = json.dumps(dict(context.run_config), sort_keys=True, default=str).encode()
        log.append(
            AuditEntry(
                time.time(), "in", run_id, job, 0, "job-config", len(config),
                sha256_hex(config), None, config.decode(),
            )
        )  # fmt: skip
    kind = _kind(msg)  # before call_next: the SecAgg+ mod consumes the stage key
    try:
        reply = call_next(msg, context)
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}".encode()
        log.append(
            AuditEntry(
                time.time(), "out", run_id, job, _round(msg), kind, len(reason),
                sha256_hex(reason), None, f"refused: {reason.decode()}",
            )
        )  # fmt: skip
        raise
    if reply.has_error():
        error = reply.error.reason or ""  # Flower's Error may carry no reason
        payload = error.encode()
        detail = f"error: {error}"
    else:
        payload = recorddict_to_proto(reply.content).SerializeToString(deterministic=True)
        detail = ""
    log.append(
        AuditEntry(
            time.time(), "out", run_id, job,
            _round(msg), kind, len(payload), sha256_hex(payload), _reported_epsilon(reply),
            detail,
        )
    )  # fmt: skip
    return reply

"""The audit log, read-only: ``GET /api/audit`` and ``GET /api/audit/verify``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from central.api.auth import require
from central.store.audit import VIA, AuditEntry, AuditLog

MAX_AUDIT_LIMIT = 1000


class AnswerOut(BaseModel):
    seq: int
    at: float
    target: str = Field(description="The gateway that answered (gw/<id>)")
    result: str


class AuditItem(BaseModel):
    seq: int
    at: float = Field(description="When central recorded it (Unix seconds)")
    actor: str = Field(description="Token name (web), key:<kid> (broker/ctl), user@host (cli)")
    action: str
    target: str = Field(description="gw/<id>, group/<name>, token/<id> ...")
    key_id: str | None = Field(description="The signing key's id (kid), when signed")
    via: str = Field(description=" | ".join(VIA))
    result: str
    detail: dict[str, Any]
    ref: str | None
    prev: str = Field(description="The previous entry's hash")
    hash: str = Field(description="SHA-256 of this entry's canonical fields and prev")
    answers: list[AnswerOut] = Field(
        default_factory=list,
        description="The gateways' answers to this action (entries of their own)",
    )


class AuditOut(BaseModel):
    total: int = Field(description="Entries matching the filters, before paging")
    items: list[AuditItem] = Field(description="Newest first")


class VerifyOut(BaseModel):
    ok: bool
    problems: list[str] = Field(description="The first break first; empty when the chain is whole")
    entries: int
    head: str | None = Field(
        description="The last entry's hash: keep a copy elsewhere to detect a cut tail"
    )


def _item(e: AuditEntry, answers: list[AuditEntry]) -> AuditItem:
    return AuditItem(
        seq=e.seq,
        at=e.at,
        actor=e.actor,
        action=e.action,
        target=e.target,
        key_id=e.key_id,
        via=e.via,
        result=e.result,
        detail=e.details,
        ref=e.ref,
        prev=e.prev,
        hash=e.hash,
        answers=[AnswerOut(seq=a.seq, at=a.at, target=a.target, result=a.result) for a in answers],
    )


def router() -> APIRouter:
    r = APIRouter(tags=["audit"], dependencies=[Depends(require("viewer"))])

    def log_of(request: Request) -> AuditLog:
        audit: AuditLog = request.app.state.audit
        return audit

    @r.get("/api/audit")
    def get_audit(
        request: Request,
        actor: Annotated[str | None, Query(max_length=512)] = None,
        target: Annotated[str | None, Query(max_length=512)] = None,
        action: Annotated[str | None, Query(max_length=512)] = None,
        via: Annotated[str | None, Query(max_length=16, description=" | ".join(VIA))] = None,
        limit: Annotated[int, Query(ge=0, le=MAX_AUDIT_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> AuditOut:
        """Who did what to which target, when, with which key, and the result; newest first."""
        log = log_of(request)
        page = log.page(
            actor=actor, target=target, action=action, via=via, limit=limit, offset=offset
        )
        answers = log.answers([e.seq for e in page.items])
        return AuditOut(
            total=page.total, items=[_item(e, answers.get(e.seq, [])) for e in page.items]
        )

    @r.get("/api/audit/verify")
    def get_audit_verify(request: Request) -> VerifyOut:
        """Check the whole hash chain (what ``titik-central audit verify`` does)."""
        log = log_of(request)
        problems = log.verify()
        head = log.head()
        return VerifyOut(
            ok=not problems,
            problems=problems,
            entries=log.page(limit=0).total,
            head=head.hash if head else None,
        )

    return r

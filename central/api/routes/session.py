"""Logging in and out (the dashboard's session cookie), who am I, the login page, tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from central.api.auth import COOKIE, Principal, auth_of, public, require
from central.store.tokens import ROLES

LOGIN_PLACEHOLDER = (
    "<!doctype html><title>Titik · log in</title><p>The login page is not installed. "
    "Log in with <code>POST /api/login</code> and a token (docs/central.md).</p>\n"
)


class LoginIn(BaseModel):
    token: str = Field(
        min_length=1, max_length=256, description="A token from `titik-central token create`"
    )


class LoginOut(BaseModel):
    name: str
    role: str = Field(description=" < ".join(ROLES))
    csrf: str = Field(
        description="Send it as X-Titik-CSRF with every POST/PUT/DELETE of this session"
    )


class MeOut(BaseModel):
    name: str
    role: str
    csrf: str | None = Field(
        default=None, description="The session's CSRF value (None when called with a Bearer token)"
    )


class TokenOut(BaseModel):
    id: str
    name: str
    role: str
    created: float
    expires: float | None
    revoked: float | None
    last_used: float | None = Field(description="Within a minute")


class TokensOut(BaseModel):
    items: list[TokenOut]


def router(web_dir: Path) -> APIRouter:
    r = APIRouter(tags=["session"])
    page = web_dir / "login.html"

    @r.get("/login", include_in_schema=False, response_model=None, dependencies=[Depends(public)])
    def get_login() -> FileResponse | HTMLResponse:
        return FileResponse(page) if page.is_file() else HTMLResponse(LOGIN_PLACEHOLDER)

    @r.post(
        "/api/login",
        dependencies=[Depends(public)],
        responses={401: {"description": "The token is not valid"}},
    )
    def post_login(body: LoginIn, request: Request, response: Response) -> LoginOut:
        """Open a dashboard session: sets the HttpOnly, SameSite=Strict ``titik_session`` cookie."""
        auth = auth_of(request)
        token = auth.tokens.check(body.token.strip())
        if token is None:
            auth.count("login", request)
            raise HTTPException(401, "token not valid (unknown, revoked, expired or mistyped)")
        sid, csrf, expires = auth.tokens.open_session(token, auth.session_s)
        auth.logged_in()
        response.set_cookie(
            COOKIE,
            sid,
            max_age=int(expires - auth.tokens.clock()),
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.headers["Cache-Control"] = "no-store"
        return LoginOut(name=token.name, role=token.role, csrf=csrf)

    @r.post("/api/logout")
    def post_logout(
        request: Request, response: Response, who: Annotated[Principal, Depends(require("viewer"))]
    ) -> dict[str, bool]:
        """End this session (the cookie); a Bearer token stays valid (revoke it from the CLI)."""
        sid = request.cookies.get(COOKIE)
        if sid:
            auth_of(request).tokens.close_session(sid)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return {"ok": True}

    @r.get("/api/me")
    def get_me(request: Request, who: Annotated[Principal, Depends(require("viewer"))]) -> MeOut:
        """Who the credential is; a session's CSRF value (for a page loaded again)."""
        sid = request.cookies.get(COOKIE)
        session = (
            auth_of(request).tokens.session(sid)
            if sid and not request.headers.get("authorization")
            else None
        )
        return MeOut(name=who.name, role=who.role, csrf=session.csrf if session else None)

    @r.get("/api/tokens", dependencies=[Depends(require("admin"))])
    def get_tokens(request: Request) -> TokensOut:
        """Every token, active or not (never a secret: only hashes are stored)."""
        return TokensOut(
            items=[
                TokenOut.model_validate(t, from_attributes=True)
                for t in auth_of(request).tokens.tokens()
            ]
        )

    return r

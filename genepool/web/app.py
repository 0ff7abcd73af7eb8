"""The approval page: production vs candidates, scores, diff, Pareto plot, Approve / Reject.

``create_app(db)`` builds the FastAPI app; ``serve()`` runs it with uvicorn on 127.0.0.1 (the page
changes what runs in production, so it never listens on other interfaces).

* GET  /                                          agents with candidates
* GET  /agents/{agent_type}                       production vs candidates
* POST /agents/{agent_type}/prompts/{id}/approve  form: approver (required), reason, csrf
* POST /agents/{agent_type}/prompts/{id}/reject   form: approver (required), reason, csrf

Posts redirect back (303) with a one-shot flash message in a cookie. Every value from the database
is escaped (Jinja2 autoescape; the SVG plot escapes its labels). Forms carry a per-process random
token, so a page on another site cannot post approvals to this server; only 127.0.0.1/localhost
Host headers are accepted (DNS-rebinding guard).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from genepool import approval
from genepool.core.sandbox import html_environment
from genepool.db import Database
from genepool.registry import PromptRegistry, RegistryError
from genepool.web.svg import pareto_svg

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
FLASH_COOKIE = "genepool_flash"
LOCAL_HOSTS = ["127.0.0.1", "localhost", "[::1]", "::1"]


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.1%}"


def _num(v: Any, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _signed(v: Any, kind: str = "num") -> str:
    if v is None:
        return ""
    if kind == "pct":
        return f"{v * 100:+.1f} pp"
    return f"{v:+,.1f}"


def _diff_class(line: str) -> str:
    if line.startswith(("+++", "---")):
        return "file"
    if line.startswith("@@"):
        return "hunk"
    if line.startswith("+"):
        return "add"
    if line.startswith("-"):
        return "del"
    return "ctx"


def _env() -> jinja2.Environment:
    # Sandboxed (genepool.core.sandbox): the page shows prompts, reasons and names that are user data.
    return html_environment(
        jinja2.FileSystemLoader(HERE / "templates"),
        filters=dict(pct=_pct, num=_num, signed=_signed, diff_class=_diff_class, urlq=lambda s: quote(str(s), safe="")),
    )


def create_app(db: Database, *, on_approved=None, langfuse=None) -> FastAPI:
    """The approval web app on ``db``; ``on_approved``/``langfuse`` are passed to :func:`approval.approve`."""
    app = FastAPI(title="genepool approval", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOSTS)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    env = _env()
    csrf_token = secrets.token_urlsafe(32)
    app.state.db = db
    app.state.csrf_token = csrf_token

    def render(request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        flash = None
        raw = request.cookies.get(FLASH_COOKIE)
        if raw:
            try:
                flash = json.loads(unquote(raw))
                if not isinstance(flash, dict) or not isinstance(flash.get("text"), str):
                    flash = None
            except ValueError:
                flash = None
        html = env.get_template(name).render(flash=flash, csrf=csrf_token, **ctx)
        resp = HTMLResponse(html, status_code=status_code)
        if raw:
            resp.delete_cookie(FLASH_COOKIE, path="/")
        return resp

    def back(agent_type: str, kind: str, text: str) -> RedirectResponse:
        text = text if len(text) <= 1200 else text[:1200] + " …"  # a cookie holds ~4 kB
        resp = RedirectResponse(f"/agents/{quote(agent_type, safe='')}", status_code=303)
        resp.set_cookie(
            FLASH_COOKIE,
            quote(json.dumps({"kind": kind, "text": text}), safe=""),
            path="/",
            httponly=True,
            samesite="strict",
        )
        return resp

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        return render(request, "index.html", agents=approval.agents_summary(db))

    @app.get("/agents/{agent_type}", response_class=HTMLResponse)
    def agent_page(request: Request, agent_type: str) -> HTMLResponse:
        try:
            ov = approval.candidates_overview(db, agent_type)
        except approval.ApprovalError as exc:
            return render(request, "error.html", status_code=404, message=str(exc))
        pareto = ov["pareto"]
        title = f"{agent_type} {pareto['experiment_id'] or ''}: success vs tokens"
        return render(request, "agent.html", ov=ov, plot=pareto_svg(pareto["points"], title=title))

    def decide(action: str, request: Request, agent_type: str, prompt_id: str,
               approver: str, reason: str, csrf: str) -> Response:
        if not secrets.compare_digest(csrf.encode(), csrf_token.encode()):
            return render(
                request, "error.html", status_code=403,
                message="This form did not come from this approval page (or the server was restarted): "
                        "reload the page and submit again.",
            )
        who = approver.strip()
        if not who:
            verb = "approve" if action == "approve" else "reject"
            return back(agent_type, "error",
                        f"Approver is required: type your name in the Approver field to {verb} {prompt_id}.")
        try:
            owner = PromptRegistry(db).get(prompt_id).agent_type
            if owner != agent_type:
                raise approval.ApprovalError(
                    f"prompt {prompt_id} belongs to agent {owner!r}, not {agent_type!r}; open /agents/{owner}"
                )
            if action == "approve":
                rec = approval.approve(db, prompt_id, who, reason, on_approved=on_approved, langfuse=langfuse)
                msg = f"Approved {rec.id} (v{rec.version}) by {who}: it is now in production."
            else:
                rec = approval.reject(db, prompt_id, who, reason)
                msg = f"Rejected {rec.id} (v{rec.version}) by {who}."
        except approval.ApprovalHookError as exc:
            log.warning("post-approval hook failed: %s", exc)
            return back(agent_type, "warning", str(exc))
        except RegistryError as exc:  # includes ApprovalError
            return back(agent_type, "error", f"Could not {action} {prompt_id}: {exc}")
        return back(agent_type, "ok", msg)

    @app.post("/agents/{agent_type}/prompts/{prompt_id}/approve")
    def approve_route(request: Request, agent_type: str, prompt_id: str, approver: str = Form(""),
                      reason: str = Form(""), csrf: str = Form("")) -> Response:
        return decide("approve", request, agent_type, prompt_id, approver, reason, csrf)

    @app.post("/agents/{agent_type}/prompts/{prompt_id}/reject")
    def reject_route(request: Request, agent_type: str, prompt_id: str, approver: str = Form(""),
                     reason: str = Form(""), csrf: str = Form("")) -> Response:
        return decide("reject", request, agent_type, prompt_id, approver, reason, csrf)

    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(host: str = "127.0.0.1", port: int = 8765, db: Database | None = None, **app_kwargs: Any) -> None:
    """Run the approval page with uvicorn (blocking). Only loopback addresses are allowed."""
    if not _is_loopback(host):
        raise ValueError(
            f"host={host!r}: the approval page only listens on 127.0.0.1 (it can change production prompts); "
            "use an SSH tunnel to reach it from another machine"
        )
    if not (0 < int(port) < 65536):
        raise ValueError(f"port={port!r} is not a TCP port; use a number between 1 and 65535 (default 8765)")
    import uvicorn

    app = create_app(db or Database.from_env(), **app_kwargs)
    uvicorn.run(app, host=host, port=int(port), log_level="info")

"""Server-rendered dashboard (Jinja2): log in with a token, the job list, a job page with live
per-item progress (a few lines of JavaScript on the SSE stream), figures, report; a submit form.

The token is kept in an HttpOnly, SameSite=Strict cookie, so forms and the event stream need no
script access to it and other sites cannot ride on it.
"""


import json
from pathlib import Path

import yaml
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from .auth import verify_token
from .jobs import RecipeRefused

__all__ = ["add_dashboard"]

_templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _fmt_time(t):
    import time  # noqa: PLC0415

    return "" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


_templates.env.filters["t"] = _fmt_time


def add_dashboard(app: FastAPI, state) -> None:
    from .app import COOKIE, _detail, _summary, submit_job  # noqa: PLC0415
    from .db import Job  # noqa: PLC0415
    from .results import list_results  # noqa: PLC0415

    def who_or_none(request: Request):
        try:
            return app.state.principal(request)
        except HTTPException:
            return None

    def page(request, name, **ctx):
        return _templates.TemplateResponse(request, name, ctx)

    @app.get("/", include_in_schema=False)
    def home(request: Request):
        who = who_or_none(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        from sqlalchemy import select  # noqa: PLC0415

        q = select(Job).order_by(Job.created_at.desc()).limit(200)
        if not who.sees_all:
            q = q.where(Job.owner == who.user)
        with state.Session() as s:
            jobs = [_summary(j) for j in s.scalars(q)]
        return page(request, "jobs.html", who=who, jobs=jobs)

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request):
        return page(request, "login.html", who=None, error=None)

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: str = Form(..., max_length=512)):
        who = verify_token(state.Session, token.strip(), state.tokens)
        if who is None:
            return page(request, "login.html", who=None, error="That token is not valid (or was revoked).")
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict", max_age=12 * 3600)
        return resp

    @app.post("/logout", include_in_schema=False)
    def logout():
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE)
        return resp

    @app.get("/submit", include_in_schema=False)
    def submit_form(request: Request):
        who = who_or_none(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        demo = state.cfg.demo_recipe
        return page(request, "submit.html", who=who, error=None,
                    text=yaml.safe_dump(demo, sort_keys=False) if demo else "", stages="")

    @app.post("/submit", include_in_schema=False)
    def submit(request: Request, recipe: str = Form(..., max_length=200_000), stages: str = Form("", max_length=200)):
        who = who_or_none(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        wanted = [s.strip() for s in stages.split(",") if s.strip()] or None
        try:
            mapping = yaml.safe_load(recipe)
            job_id = submit_job(state, who.user, mapping, wanted)
        except yaml.YAMLError as exc:
            return page(request, "submit.html", who=who, error=f"not YAML: {exc}", text=recipe, stages=stages)
        except RecipeRefused as exc:
            return page(request, "submit.html", who=who, error=str(exc), text=recipe, stages=stages)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/jobs/{job_id}", include_in_schema=False)
    def job_page(request: Request, job_id: str):
        who = who_or_none(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        job = app.state.own_job(job_id, who)
        detail = _detail(state.cfg, job)
        results = list_results(state.cfg, job_id)
        report = None
        if any(r["name"] == "report.txt" for r in results):
            report = (state.cfg.results_root / job_id / "report.txt").read_text(errors="replace")
        return page(request, "job.html", who=who, job=detail, results=results, report=report,
                    recipe=yaml.safe_dump(detail["recipe"], sort_keys=False), progress_json=json.dumps(detail["progress"]))

    @app.post("/jobs/{job_id}/cancel", include_in_schema=False)
    def cancel(request: Request, job_id: str):
        who = who_or_none(request)
        if who is None:
            return RedirectResponse("/login", status_code=303)
        app.state.own_job(job_id, who)
        state.executor.cancel(job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

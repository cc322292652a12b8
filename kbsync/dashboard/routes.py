"""The dashboard's URLs: one handler per page (reading through `queries`) and one per action
(each refused unless `Dashboard.identify` knows its token, then handed to `actions` under the
token's name)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from kbsync.dashboard import charts, queries
from kbsync.dashboard.actions import Asker, Outcome
from kbsync.dashboard.board import Dashboard
from kbsync.store.models import KbFact
from kbsync.store.status import status

ACTIONS = ("rollback", "verify", "retry", "release")


def _page(request: Request) -> int:
    try:
        return max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        return 1


def routes(board: Dashboard) -> list[Route]:
    # Pages are plain functions: Starlette runs them in its thread pool (the database is blocking).
    def overview(request: Request) -> Response:
        with board.db.session() as s:
            view = queries.overview(s)
        # capacity, headroom and holds exactly as `kbsync status --json` gives them
        return board.render(request, "overview.html", view=view, now=status(board.db, gate=board.gate))

    def timeline(request: Request) -> Response:
        with board.db.session() as s:
            page = queries.timeline(s, _page(request), board.page_size)
            plotted = charts.points(list(reversed(page.rows)))   # oldest first
            ids = [b.id for b in page.rows]
            return board.render(request, "timeline.html", page=page, rollbacks=queries.rollbacks(s, ids),
                                gates=queries.gate_figures(s, ids),
                                shares_svg=charts.shares_chart(plotted), size_svg=charts.size_chart(plotted))

    def batch(request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        with board.db.session() as s:
            view = queries.batch_view(s, batch_id, _page(request), board.page_size)
            if view is None:
                return board.render(request, "missing.html", 404, what=f"batch {batch_id}")
            return board.render(request, "batch.html", view=view)

    def facts(request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        relation = request.query_params.get("relation", "").strip()
        found: list[KbFact] = []
        requested: list[tuple[str, str, str]] = []
        if q:
            with board.db.session() as s:
                found = queries.find_facts(s, q, relation)
                if len(found) == 1:
                    return RedirectResponse(f"/facts/{found[0].subject}/{found[0].relation}", status_code=303)
                if not found:
                    requested = queries.requested_facts(s, q, relation)
        return board.render(request, "facts.html", q=q, relation=relation, found=found, requested=requested)

    def fact(request: Request) -> Response:
        subject, relation = request.path_params["subject"], request.path_params["relation"]
        with board.db.session() as s:
            view = queries.fact(s, subject, relation, _page(request), board.page_size)
            return board.render(request, "fact.html", view=view)

    def failures(request: Request) -> Response:
        group = request.query_params.get("group")
        with board.db.session() as s:
            if group is None:
                return board.render(request, "failures.html", groups=queries.failure_groups(s))
            ids = queries.failed_in_group(s, group)
            number, size = _page(request), board.page_size
            page = queries.Page(queries.failed_requests(s, ids[(number - 1) * size:number * size]), number, size, len(ids))
            return board.render(request, "failure_group.html", group=group, page=page)

    def versions(request: Request) -> Response:
        with board.db.session() as s:
            return board.render(request, "versions.html", page=queries.versions(s, _page(request), board.page_size))

    def retry(group: str | None, actor: Asker) -> Outcome:
        """Retry the failed requests of one reason group (None: every failed request, which the
        form must ask for explicitly: scope=all)."""
        with board.db.session() as s:
            ids = queries.failed_in_group(s, group) if group is not None else None
        assert board.actions is not None
        return board.actions.retry(ids, actor)

    async def act(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return board.render(request, "missing.html", 404, what=request.url.path)
        form = await request.form()
        name, refused = board.identify(str(form.get("token", "")))
        if refused:
            return board.render(request, "action.html", 403, ok=False, action=action, message=refused)
        assert board.actions is not None
        actor = Asker(name, request.client.host if request.client else "unknown")   # the token names who asked
        try:
            if action == "rollback":
                outcome = await run_in_threadpool(board.actions.rollback, int(str(form["batch"])), actor)
            elif action == "verify":
                batch = str(form.get("batch", "")).strip()
                outcome = await run_in_threadpool(board.actions.verify, int(batch) if batch else None, actor)
            elif action == "release":
                subject, relation = str(form["subject"]).strip(), str(form["relation"]).strip()
                if not subject or not relation:
                    raise ValueError("no fact")
                outcome = await run_in_threadpool(board.actions.release, subject, relation, actor)
            else:
                group, scope = form.get("group"), str(form.get("scope", "")).strip()
                if group is None and scope != "all":   # no scope is not "everything"
                    return board.render(request, "action.html", 400, ok=False, action=action,
                                        message="say which failed requests to retry: a reason group (group=...) "
                                                "or every failed request (scope=all); nothing was changed")
                outcome = await run_in_threadpool(retry, None if group is None else str(group), actor)
        except (KeyError, ValueError):
            return board.render(request, "action.html", 400, ok=False, action=action,
                                message="the form lacks a valid batch number" if action != "release"
                                else "the form lacks the fact: subject and relation")
        return board.render(request, "action.html", outcome.status, ok=outcome.ok, action=action,
                            message=outcome.message)

    return [
        Route("/", overview), Route("/timeline", timeline), Route("/batches/{batch_id:int}", batch),
        Route("/facts", facts), Route("/facts/{subject}/{relation}", fact), Route("/failures", failures),
        Route("/versions", versions),
        Route("/actions/{action:str}", act, methods=["POST"]),
    ]


def not_found(board: Dashboard) -> Callable[[Request, Exception], Awaitable[HTMLResponse]]:
    async def handler(request: Request, exc: Exception) -> HTMLResponse:
        return board.render(request, "missing.html", 404, what=request.url.path)
    return handler

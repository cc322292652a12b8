"""The audit dashboard: `kbsync dashboard`, a read-only web view of the database by default.

    app.py       the ASGI application (Starlette), templates and the token check
    routes.py    one handler per page and per action
    queries.py   what each page reads (paginated, indexed)
    charts.py    the timeline's SVG charts (pygal)
    actions.py   roll back, re-verify, retry: the dashboard's only calls into kbsync/sync/
    server.py    serving it (uvicorn), alone or in a thread of the daemon
"""

"""The HTTP routes, one router per area; each route is thin and calls the library the CLI calls."""

from fastapi import APIRouter

from . import alerts, ask, dashboard, health, index, jobs, keys, maintenance, notes, performance, search

routers: list[APIRouter] = [
    health.router,
    search.router,
    ask.router,
    index.router,
    notes.router,
    jobs.router,
    keys.router,
    performance.router,
    alerts.router,
    maintenance.router,
    dashboard.router,
]

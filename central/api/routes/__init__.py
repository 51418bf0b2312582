"""The API's routers, one module per area; :func:`central.api.app.create_app` includes them.

Each module has ``router(...) -> APIRouter`` taking what its endpoints need (no globals), so
every app built by ``create_app`` gets its own.
"""

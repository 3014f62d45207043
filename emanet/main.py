"""ASGI entry point: ``uvicorn emanet.main:app``."""

from emanet.app import create_app

app = create_app()

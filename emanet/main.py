"""ASGI entry point: ``uvicorn emanet.main:app``."""

from emanet.app import create_app
from emanet.core import heap

app = create_app()
heap.settle()

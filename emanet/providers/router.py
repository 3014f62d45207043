"""The sandbox provider's hosted checkout page (HTML). The rules live in ``emanet.providers.sandbox``.

Card fields are plain form fields read here and handed straight to ``SandboxProvider.submit_card``; they are
never logged, stored or echoed back into the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from emanet.providers.sandbox import CheckoutView, SandboxProvider

router = APIRouter(tags=["sandbox"])
templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
)

# The page is a test tool served to browsers; keep it out of caches and frames of other sites.
_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def _provider(request: Request) -> SandboxProvider:
    return SandboxProvider(request.app.state.settings, request.app.state.database)


def _page(view: CheckoutView) -> HTMLResponse:
    html = templates.get_template("sandbox_checkout.html").render(view=view)
    code = 422 if view.error else 200  # 422: the card input was refused
    return HTMLResponse(html, status_code=code, headers=_PAGE_HEADERS)


@router.get(
    "/sandbox/checkout/{reference}",
    response_class=HTMLResponse,
    response_model=None,
    summary="The sandbox provider's hosted checkout page (test cards, 3-D Secure step)",
)
async def checkout_page(reference: str, request: Request) -> HTMLResponse:
    return _page(await _provider(request).checkout_view(reference))


@router.post(
    "/sandbox/checkout/{reference}",
    response_class=HTMLResponse,
    response_model=None,
    summary="Submit the sandbox card form or its 3-D Secure code",
)
async def submit_checkout(
    reference: str,
    request: Request,
    step: Annotated[str, Form()] = "card",
    card_number: Annotated[str, Form()] = "",
    expiry: Annotated[str, Form()] = "",
    cvc: Annotated[str, Form()] = "",
    three_d_secure_code: Annotated[str, Form()] = "",
) -> Response:
    provider = _provider(request)
    if step == "three_d_secure":
        result = await provider.submit_three_d_secure(reference, three_d_secure_code)
    else:
        result = await provider.submit_card(reference, card_number, expiry, cvc)
    if result.view is not None:
        return _page(result.view)
    target = result.redirect_to or f"/sandbox/checkout/{reference}"
    return RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER, headers=_PAGE_HEADERS)

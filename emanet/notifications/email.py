"""E-mail: localised Jinja2 templates (HTML and text) sent over SMTP with aiosmtplib."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

import aiosmtplib
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from emanet.core import clock
from emanet.core.settings import Settings
from emanet.notifications.messages import DEFAULT_LOCALE, LOCALES

templates = Environment(
    loader=PackageLoader("emanet.notifications", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def render_email(*, locale: str, title: str, body: str, name: str, settings: Settings) -> RenderedEmail:
    locale = locale if locale in LOCALES else DEFAULT_LOCALE
    context = {
        "locale": locale,
        "title": title,
        "body": body,
        "name": name,
        "product": settings.product_name,
        "url": settings.public_url,
        "subject": title,
    }
    return RenderedEmail(
        subject=f"{settings.product_name}: {title}",
        text=templates.get_template(f"{locale}/email.txt").render(context),
        html=templates.get_template(f"{locale}/email.html").render(context),
    )


async def send_email(settings: Settings, *, to: str, email: RenderedEmail) -> str:
    """Send over SMTP; returns the Message-ID. Raises aiosmtplib.SMTPException or OSError on failure."""
    if not settings.smtp_host:
        raise ValueError("EMANET_SMTP_HOST is not set")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = email.subject
    message["Date"] = format_datetime(clock.now())
    message_id = make_msgid(domain=parseaddr(settings.smtp_from)[1].partition("@")[2] or None)
    message["Message-ID"] = message_id
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        use_tls=settings.smtp_security == "tls",
        start_tls=settings.smtp_security == "starttls",
        timeout=settings.smtp_timeout_seconds,
    )
    return message_id

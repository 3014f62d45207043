# ruff: noqa: RUF001 - Turkish and Arabic text and typographic quotes are intended
"""What a notification says, per locale (en, tr, ar): a title and a body for each kind of event or reminder.

Placeholders come from the event's object: ``{number}`` (transaction number), ``{title}``, ``{amount}``
(formatted for the locale), ``{deadline}``, ``{url}``, ``{kind}``. Unknown kinds use ``_generic``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from babel.dates import format_datetime
from babel.numbers import format_currency

from emanet.core.money import currency_exponent

LOCALES = ("en", "tr", "ar")
DEFAULT_LOCALE = "en"

MESSAGES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "escrow.created": ("New escrow {number}", "Escrow {number} “{title}” for {amount} was created."),
        "escrow.accepted": ("Escrow {number} accepted", "Both parties agreed to the terms of “{title}”."),
        "escrow.partially_funded": (
            "Part payment received for {number}",
            "Part of the {amount} for “{title}” has been paid.",
        ),
        "escrow.funded": (
            "Escrow {number} is funded",
            "{amount} for “{title}” is held in escrow. The seller can now deliver.",
        ),
        "escrow.delivered": (
            "Escrow {number} delivered",
            "The seller marked “{title}” as delivered. The buyer can inspect it, then release "
            "the payment or open a dispute.",
        ),
        "escrow.released": (
            "Payment released for {number}",
            "{amount} for “{title}” was released to the seller.",
        ),
        "escrow.cancelled": (
            "Escrow {number} cancelled",
            "“{title}” was cancelled; any payment is refunded.",
        ),
        "escrow.refunded": (
            "Escrow {number} refunded",
            "The payment for “{title}” was refunded to the buyer.",
        ),
        "escrow.expired": ("Escrow {number} expired", "“{title}” was not paid in time and has expired."),
        "escrow.disputed": (
            "Dispute opened on {number}",
            "A dispute was opened on “{title}”. The money stays in escrow until it is resolved.",
        ),
        "escrow.resolved": ("Dispute on {number} resolved", "The dispute on “{title}” was resolved."),
        "dispute.opened": (
            "Dispute opened on {number}",
            "A dispute was opened on “{title}”. The money stays in escrow until it is resolved.",
        ),
        "dispute.escalated": (
            "Dispute on {number} escalated",
            "The dispute on “{title}” was not settled within 48 hours and was escalated.",
        ),
        "dispute.resolved": ("Dispute on {number} resolved", "The dispute on “{title}” was resolved."),
        "dispute.message": (
            "New message on dispute {number}",
            "There is a new message in the dispute on “{title}”.",
        ),
        "payment.succeeded": ("Payment received", "Your payment of {amount} was received."),
        "payment.failed": (
            "Payment failed",
            "Your payment of {amount} did not go through. You can try again.",
        ),
        "payout.paid": ("Payout sent", "Your payout of {amount} was sent."),
        "payout.failed": (
            "Payout failed",
            "Your payout of {amount} failed; the money is back in your balance.",
        ),
        "webhook_endpoint.disabled": (
            "Webhook endpoint disabled",
            "Deliveries to {url} failed repeatedly, so the endpoint was disabled. "
            "Fix it, then enable it again.",
        ),
        "reminder.auto_release": (
            "Inspection of {number} ends soon",
            "The payment for “{title}” will be released to the seller automatically on "
            "{deadline}. Release it or open a dispute before then.",
        ),
        "reminder.payment_due": (
            "Escrow {number} awaits payment",
            "Pay {amount} for “{title}” before {deadline} or the escrow expires.",
        ),
        "_generic": ("Update on {number}", "{kind}: “{title}”."),
    },
    "tr": {
        "escrow.created": (
            "Yeni emanet işlemi {number}",
            "{amount} tutarındaki “{title}” için {number} numaralı emanet işlemi oluşturuldu.",
        ),
        "escrow.accepted": ("{number} kabul edildi", "Her iki taraf da “{title}” koşullarını kabul etti."),
        "escrow.partially_funded": (
            "{number} için kısmi ödeme alındı",
            "“{title}” için {amount} tutarının bir kısmı ödendi.",
        ),
        "escrow.funded": (
            "{number} için ödeme emanette",
            "“{title}” için {amount} emanette tutuluyor. Satıcı artık teslimat yapabilir.",
        ),
        "escrow.delivered": (
            "{number} teslim edildi",
            "Satıcı “{title}” işlemini teslim edildi olarak işaretledi. Alıcı inceleyip ödemeyi "
            "serbest bırakabilir veya itiraz açabilir.",
        ),
        "escrow.released": (
            "{number} için ödeme serbest bırakıldı",
            "“{title}” için {amount} satıcıya aktarıldı.",
        ),
        "escrow.cancelled": (
            "{number} iptal edildi",
            "“{title}” iptal edildi; yapılan ödemeler iade edilecek.",
        ),
        "escrow.refunded": ("{number} iade edildi", "“{title}” ödemesi alıcıya iade edildi."),
        "escrow.expired": ("{number} süresi doldu", "“{title}” zamanında ödenmediği için süresi doldu."),
        "escrow.disputed": (
            "{number} için itiraz açıldı",
            "“{title}” için bir itiraz açıldı. Para, itiraz çözülene kadar emanette kalır.",
        ),
        "escrow.resolved": ("{number} itirazı sonuçlandı", "“{title}” ile ilgili itiraz sonuçlandı."),
        "dispute.opened": (
            "{number} için itiraz açıldı",
            "“{title}” için bir itiraz açıldı. Para, itiraz çözülene kadar emanette kalır.",
        ),
        "dispute.escalated": (
            "{number} itirazı üst incelemeye aktarıldı",
            "“{title}” ile ilgili itiraz 48 saat içinde çözülemediği için üst incelemeye aktarıldı.",
        ),
        "dispute.resolved": ("{number} itirazı sonuçlandı", "“{title}” ile ilgili itiraz sonuçlandı."),
        "dispute.message": ("{number} itirazında yeni mesaj", "“{title}” itirazında yeni bir mesaj var."),
        "payment.succeeded": ("Ödeme alındı", "{amount} tutarındaki ödemeniz alındı."),
        "payment.failed": (
            "Ödeme başarısız",
            "{amount} tutarındaki ödemeniz gerçekleşmedi. Tekrar deneyebilirsiniz.",
        ),
        "payout.paid": ("Para çekme gönderildi", "{amount} tutarındaki para çekme talebiniz gönderildi."),
        "payout.failed": (
            "Para çekme başarısız",
            "{amount} tutarındaki para çekme işlemi başarısız oldu; tutar bakiyenize geri eklendi.",
        ),
        "webhook_endpoint.disabled": (
            "Webhook uç noktası devre dışı",
            "{url} adresine gönderimler tekrar tekrar başarısız olduğu için uç nokta "
            "devre dışı bırakıldı. Sorunu giderip yeniden etkinleştirin.",
        ),
        "reminder.auto_release": (
            "{number} inceleme süresi bitiyor",
            "“{title}” ödemesi {deadline} tarihinde satıcıya otomatik olarak aktarılacak. "
            "Bu tarihten önce ödemeyi serbest bırakın veya itiraz açın.",
        ),
        "reminder.payment_due": (
            "{number} ödeme bekliyor",
            "Emanet işleminin süresi dolmaması için {deadline} tarihine kadar “{title}” için "
            "{amount} ödeyin.",
        ),
        "_generic": ("{number} güncellendi", "{kind}: “{title}”."),
    },
    "ar": {
        "escrow.created": (
            "معاملة ضمان جديدة {number}",
            "تم إنشاء معاملة الضمان {number} «{title}» بمبلغ {amount}.",
        ),
        "escrow.accepted": ("تم قبول {number}", "وافق الطرفان على شروط «{title}»."),
        "escrow.partially_funded": (
            "تم استلام دفعة جزئية لـ {number}",
            "تم دفع جزء من مبلغ {amount} لـ «{title}».",
        ),
        "escrow.funded": (
            "تم تمويل {number}",
            "المبلغ {amount} لـ «{title}» محفوظ في الضمان. يمكن للبائع التسليم الآن.",
        ),
        "escrow.delivered": (
            "تم تسليم {number}",
            "أشار البائع إلى تسليم «{title}». يمكن للمشتري الفحص ثم تحرير الدفعة أو فتح نزاع.",
        ),
        "escrow.released": ("تم تحرير الدفعة لـ {number}", "تم تحويل {amount} لـ «{title}» إلى البائع."),
        "escrow.cancelled": ("تم إلغاء {number}", "تم إلغاء «{title}»، وسيتم رد أي مبلغ مدفوع."),
        "escrow.refunded": ("تم رد مبلغ {number}", "تم رد مبلغ «{title}» إلى المشتري."),
        "escrow.expired": ("انتهت صلاحية {number}", "انتهت صلاحية «{title}» لعدم الدفع في الوقت المحدد."),
        "escrow.disputed": (
            "تم فتح نزاع على {number}",
            "تم فتح نزاع على «{title}». يبقى المبلغ في الضمان حتى يُحل النزاع.",
        ),
        "escrow.resolved": ("تم حل النزاع على {number}", "تم حل النزاع على «{title}»."),
        "dispute.opened": (
            "تم فتح نزاع على {number}",
            "تم فتح نزاع على «{title}». يبقى المبلغ في الضمان حتى يُحل النزاع.",
        ),
        "dispute.escalated": (
            "تم تصعيد النزاع على {number}",
            "لم يُحل النزاع على «{title}» خلال 48 ساعة فتم تصعيده.",
        ),
        "dispute.resolved": ("تم حل النزاع على {number}", "تم حل النزاع على «{title}»."),
        "dispute.message": ("رسالة جديدة في نزاع {number}", "توجد رسالة جديدة في النزاع على «{title}»."),
        "payment.succeeded": ("تم استلام الدفعة", "تم استلام دفعتك بمبلغ {amount}."),
        "payment.failed": ("فشلت الدفعة", "لم تتم دفعتك بمبلغ {amount}. يمكنك المحاولة مرة أخرى."),
        "payout.paid": ("تم إرسال السحب", "تم إرسال سحبك بمبلغ {amount}."),
        "payout.failed": ("فشل السحب", "فشل سحبك بمبلغ {amount}، وأُعيد المبلغ إلى رصيدك."),
        "webhook_endpoint.disabled": (
            "تم تعطيل نقطة استقبال الويب هوك",
            "فشلت عمليات الإرسال إلى {url} مرارًا فتم تعطيل نقطة الاستقبال. أصلح المشكلة ثم فعّلها من جديد.",
        ),
        "reminder.auto_release": (
            "تنتهي فترة فحص {number} قريبًا",
            "سيتم تحرير دفعة «{title}» إلى البائع تلقائيًا في {deadline}. حرّر الدفعة أو افتح نزاعًا قبل ذلك.",
        ),
        "reminder.payment_due": (
            "{number} بانتظار الدفع",
            "ادفع {amount} لـ «{title}» قبل {deadline} وإلا ستنتهي صلاحية الضمان.",
        ),
        "_generic": ("تحديث على {number}", "{kind}: «{title}»."),
    },
}


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "—"


def format_money(amount: int, currency: str, locale: str) -> str:
    """Minor units to a localised amount (display only: Decimal, never float)."""
    value = Decimal(amount).scaleb(-currency_exponent(currency))
    return str(format_currency(value, currency, locale=locale))


def _amount(data: Mapping[str, Any], locale: str) -> str | None:
    amount: Any = data.get("amount")
    currency: Any = data.get("currency")
    if isinstance(amount, Mapping):  # a Money object
        amount, currency = amount.get("amount"), amount.get("currency")
    if isinstance(amount, int) and isinstance(currency, str):
        return format_money(amount, currency, locale)
    return None


def placeholders(kind: str, data: Mapping[str, Any], locale: str) -> _Values:
    nested = data.get("escrow")
    escrow: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}
    values = _Values(kind=kind)
    number = data.get("number") or escrow.get("number") or data.get("id")
    title = data.get("title") or escrow.get("title")
    amount = _amount(data, locale) or _amount(escrow, locale)
    for key, value in (("number", number), ("title", title), ("amount", amount), ("url", data.get("url"))):
        if value:
            values[key] = str(value)
    deadline = data.get("deadline")
    if isinstance(deadline, str):
        with contextlib.suppress(ValueError):
            deadline = datetime.fromisoformat(deadline)
    if isinstance(deadline, datetime):
        values["deadline"] = format_datetime(deadline, "d MMM y HH:mm", tzinfo=UTC, locale=locale) + " UTC"
    return values


def render_message(kind: str, data: Mapping[str, Any], locale: str) -> tuple[str, str]:
    catalog = MESSAGES.get(locale) or MESSAGES[DEFAULT_LOCALE]
    title, body = catalog.get(kind) or catalog["_generic"]
    values = placeholders(kind, data, locale)
    return title.format_map(values), body.format_map(values)

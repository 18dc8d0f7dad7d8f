"""E-mail delivery with the standard library: one message (plain text + HTML alternative) per address.

`smtplib` blocks, so each conversation runs in a worker thread (`asyncio.to_thread`) and the event loop
keeps serving. Settings: LEDGERLINK_SMTP_HOST, _PORT, _USERNAME, _PASSWORD, _FROM, _STARTTLS,
_TIMEOUT_SECONDS (docs/alerts.md). Without a host, nothing is attempted and the target is reported as
not configured: an installation that only uses webhooks needs no mail server.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ledgerlink.notify.notice import DeliveryFailed, Notice
from ledgerlink.settings import Settings

NOT_CONFIGURED = (
    "e-mail is not configured on this ledgerlink installation: set LEDGERLINK_SMTP_HOST "
    "(and LEDGERLINK_SMTP_FROM) to send e-mail digests"
)


def is_address(text: str) -> bool:
    """True for a bare address (`office@example.com`): no display name, no list, no line breaks."""
    try:
        parsed = Address(addr_spec=text)
    except (ValueError, IndexError, HeaderParseError):
        return False
    return bool(parsed.username and parsed.domain) and parsed.addr_spec == text


def build_email(notice: Notice, *, sender: str, to: str) -> EmailMessage:
    """The message for one address. `Auto-Submitted` keeps out-of-office replies from answering it."""
    message = EmailMessage()
    message["Subject"] = notice.subject
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(notice.text)
    message.add_alternative(notice.html, subtype="html")
    return message


async def send_email(settings: Settings, to: str, notice: Notice) -> None:
    """Send `notice` to `to`, or raise `DeliveryFailed` saying why (not configured, refused, unreachable)."""
    if not settings.smtp_host:
        raise DeliveryFailed(NOT_CONFIGURED)
    if not is_address(settings.smtp_from):
        raise DeliveryFailed(
            f"LEDGERLINK_SMTP_FROM {settings.smtp_from!r} is not an e-mail address (office@example.com)"
        )
    message = build_email(notice, sender=settings.smtp_from, to=to)
    await asyncio.to_thread(_send, settings, message)


def _send(settings: Settings, message: EmailMessage) -> None:
    host, port = settings.smtp_host or "", settings.smtp_port
    where = f"SMTP server {host}:{port}"
    try:
        with smtplib.SMTP(host, port, timeout=settings.smtp_timeout_seconds) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(f"{to}: {code} {_text(why)}" for to, (code, why) in exc.recipients.items())
        raise DeliveryFailed(f"{where} refused the recipient ({refused})") from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(
            f"{where} refused the login {settings.smtp_username!r} ({exc.smtp_code} {_text(exc.smtp_error)}); "
            "check LEDGERLINK_SMTP_USERNAME and LEDGERLINK_SMTP_PASSWORD"
        ) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed(
            f"{where} does not offer STARTTLS (or login); check LEDGERLINK_SMTP_STARTTLS and the port"
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(
            f"{where} refused the message ({exc.smtp_code} {_text(exc.smtp_error)})"
        ) from None
    except smtplib.SMTPException as exc:
        raise DeliveryFailed(f"{where} failed: {exc}") from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"{where}: TLS failed ({exc.reason or exc})") from None
    except TimeoutError:
        raise DeliveryFailed(f"{where} did not answer within {settings.smtp_timeout_seconds:g} s") from None
    except OSError as exc:
        raise DeliveryFailed(f"{where} is unreachable ({exc.strerror or exc})") from None


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value

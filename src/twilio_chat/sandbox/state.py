"""The sandbox's Messages resource: state, Twilio's shapes and errors, and status callbacks.

Delivery rule (documented in the README): a recipient whose number ends in 0000 or 0003
gets ``undelivered`` with 30003; one ending in 0004-0008 gets ``undelivered`` with 3000N.
Every other number goes ``queued`` → ``sent`` → ``delivered``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import mimetypes
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import phonenumbers
import requests
import urllib3
from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.sql import ClauseElement

from twilio_chat.db.engine import Database
from twilio_chat.db.models import SandboxFault, SandboxMessage, SandboxOptOut, utcnow
from twilio_chat.errors import N_, InvalidInput
from twilio_chat.messaging import OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS
from twilio_chat.sandbox._statements import CountedStatement, DriverStatement, per_driver
from twilio_chat.settings import Settings, is_e164
from twilio_chat.twilio.gateway import TwilioGateway
from twilio_chat.twilio.segments import count_segments

log = logging.getLogger(__name__)
API_VERSION = "2010-04-01"
SANDBOX_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # when the sandbox's account and number "began"
FAILING_SUFFIXES = {
    "0000": 30003,
    "0003": 30003,
    "0004": 30004,
    "0005": 30005,
    "0006": 30006,
    "0007": 30007,
    "0008": 30008,
}
ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}


class SandboxError(Exception):
    """An error the sandbox answers in Twilio's JSON shape."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        """Return Twilio's error body."""
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def rfc2822(value: datetime | None) -> str | None:
    """Format a timestamp the way Twilio does."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def message_uri(account_sid: str, sid: str) -> str:
    """Return a message's URI relative to the API root."""
    return f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json"


def to_json(m: SandboxMessage) -> dict[str, Any]:
    """Render a sandbox message as Twilio's Message JSON."""
    uri = message_uri(m.account_sid, m.sid)
    return {
        "account_sid": m.account_sid,
        "api_version": API_VERSION,
        "body": m.body,
        "date_created": rfc2822(m.date_created),
        "date_sent": rfc2822(m.date_sent),
        "date_updated": rfc2822(m.date_updated),
        "direction": m.direction,
        "error_code": m.error_code,
        "error_message": m.error_message,
        "from": m.from_number,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": str(len(m.media_urls or [])),
        "num_segments": str(m.num_segments),
        "price": None,
        "price_unit": "USD",
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        "to": m.to_number,
        "uri": uri,
    }


def new_sid(prefix: str) -> str:
    """Return a fresh Twilio-style SID."""
    return prefix + uuid.uuid4().hex


MESSAGES = cast(Table, SandboxMessage.__table__)
MESSAGE_KEYS = (
    "sid", "account_sid", "messaging_service_sid", "from_number", "to_number", "body",
    "media_urls", "status", "direction", "num_segments", "status_callback", "content_sid",
    "date_created", "date_updated",
)  # fmt: skip


@dataclass(frozen=True)
class _Statements:
    fault_left: DriverStatement
    opted_out: CountedStatement  # shaped by how many senders (number, service) are asked
    insert: DriverStatement
    advance: DriverStatement


@per_driver
def _statements(dialect: Dialect) -> _Statements:
    """Build and compile the create call's and the callbacks' statements (once per driver).

    Every reply is a create call and two callbacks: on the driver's cursor, as the app's own
    hot paths, instead of the ORM's unit of work.
    """
    m = MESSAGES.c
    f = cast(Table, SandboxFault.__table__).c
    o = cast(Table, SandboxOptOut.__table__).c

    def opted_out(n: int) -> ClauseElement:
        senders = [bindparam(f"sender_{i}", type_=o.sender.type) for i in range(n)]
        return select(o.id).where(o.number == bindparam("number_0"), o.sender.in_(senders))

    def kept(column: Any) -> Any:  # a new value where one is given
        return func.coalesce(bindparam(column.key, type_=column.type), column)

    advance = (
        update(MESSAGES)
        .where(m.sid == bindparam("message_sid"))
        .values(
            status=bindparam("status"),
            date_updated=bindparam("now", type_=m.date_updated.type),
            date_sent=kept(m.date_sent),
            error_code=kept(m.error_code),
            error_message=kept(m.error_message),
        )
        .returning(m.account_sid, m.from_number, m.to_number, m.messaging_service_sid)
    )
    return _Statements(
        fault_left=DriverStatement(select(f.id).where(f.remaining > 0).limit(1), dialect, []),
        opted_out=CountedStatement(dialect, opted_out),
        insert=DriverStatement(MESSAGES.insert().returning(m.id), dialect, list(MESSAGE_KEYS)),
        advance=DriverStatement(advance, dialect, []),
    )


FAULT_TEXTS = {
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}


def _take_fault(session: Session) -> SandboxError | None:
    conn = session.connection()
    if not _statements(conn.dialect).fault_left.run(conn, {}):
        return None  # the usual case, answered on the driver's cursor
    fault = session.scalars(
        select(SandboxFault).where(SandboxFault.remaining > 0).order_by(SandboxFault.id).limit(1)
    ).first()
    if fault is None:
        return None
    fault.remaining -= 1
    code, text = FAULT_TEXTS.get(fault.status_code, (fault.error_code or 20001, "Injected error"))
    return SandboxError(fault.status_code, fault.error_code or code, text)


def inject_fault(
    db: Database, status_code: int, count: int = 1, error_code: int | None = None
) -> None:
    """Make the sandbox answer its next `count` create calls with this HTTP status and code."""
    if status_code not in (400, 429, 500, 503):
        raise InvalidInput("status must be 400, 429, 500 or 503", field="Status")
    if status_code == 400 and not error_code:
        raise InvalidInput("a 400 fault needs a Twilio error code", field="Code")
    if not 1 <= count <= 1000:
        raise InvalidInput("count must be between 1 and 1000", field="Count")
    with db.session() as session:
        session.add(SandboxFault(status_code=status_code, error_code=error_code, remaining=count))


Steps = list[tuple[str, int | None]]  # status callbacks still to fire: (status, error code)


class CallbackScheduler:
    """Runs the sandbox's status callbacks when due, on a few reusable threads.

    A thread per sent message cost more than the message itself under load (starting one waits
    for the new thread to be scheduled). Here at most MAX_THREADS threads, named ``sandbox-…``,
    take due callbacks in order. They all exit once nothing is scheduled or running, so joining
    any one of them waits until every pending callback has been fired (as the tests do).
    """

    MAX_THREADS = 4

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start empty (also in a forked child: the parent's threads do not run there)."""
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._threads = 0  # alive
        self._waiting = 0  # alive and free to take a callback
        self._running = 0  # callbacks being run
        self._local = threading.local()

    def schedule(self, delay: float, callback: Callable[[], None]) -> None:
        """Run `callback` in about `delay` seconds on one of the scheduler's threads."""
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), callback))
            if self._waiting:
                self._cond.notify()
            else:
                self._spawn()

    def _spawn(self) -> None:
        """Start another thread if under the cap (the caller holds the condition)."""
        if self._threads >= self.MAX_THREADS:
            return
        self._threads += 1
        name = f"sandbox-callbacks-{next(self._order)}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def _take(self) -> Callable[[], None] | None:
        """Wait for the next due callback; None once nothing is scheduled or running."""
        with self._cond:
            while True:
                wait: float | None = None
                if self._due:
                    wait = self._due[0][0] - time.monotonic()
                    if wait <= 0:
                        callback = heapq.heappop(self._due)[2]
                        self._running += 1
                        if self._due and self._due[0][0] <= time.monotonic() and not self._waiting:
                            self._spawn()  # more are due already: share them out
                        return callback
                elif not self._running:
                    self._threads -= 1
                    return None
                self._waiting += 1
                self._cond.wait(wait)
                self._waiting -= 1

    def http(self) -> urllib3.PoolManager | None:
        """Return this scheduler thread's HTTP pool (kept alive between callbacks), if any."""
        pool: urllib3.PoolManager | None = getattr(self._local, "http", None)
        return pool

    def _run(self) -> None:
        # urllib3 straight, the transport under requests: a callback through requests cost
        # twice the client's CPU (950 against 400-560 us per post, bench/README.md). Twilio's
        # callbacks go straight to the app: no proxy from the environment, no retry, no redirect.
        self._local.http = urllib3.PoolManager(num_pools=4, maxsize=1, retries=False)
        try:
            while (callback := self._take()) is not None:
                try:
                    callback()
                except Exception:
                    log.exception("sandbox: a status callback failed")
                finally:
                    with self._cond:
                        self._running -= 1
                        if not self._running and not self._due:
                            self._cond.notify_all()  # idle: every thread may go
        finally:
            self._local.http.clear()
            del self._local.http


CALLBACKS = CallbackScheduler()
os.register_at_fork(after_in_child=CALLBACKS.reset)


@dataclass
class Sandbox:
    """The emulator's operations, over the app's database."""

    db: Database
    settings: Settings
    gateway: TwilioGateway

    # REST resource --------------------------------------------------------------------
    def create(self, form: Mapping[str, str], media_urls: list[str]) -> dict[str, Any]:
        """Create an outbound message as Twilio does, then fire its status callbacks."""
        received = utcnow()  # date_created: when the call came in, not when the lock was free
        to = (form.get("To") or "").strip()
        from_ = (form.get("From") or "").strip() or None
        service = (form.get("MessagingServiceSid") or "").strip() or None
        body = form.get("Body") or ""
        content_sid = (form.get("ContentSid") or "").strip() or None
        callback = (form.get("StatusCallback") or "").strip() or None
        if not to:
            raise SandboxError(400, 21604, "A 'To' phone number is required.")
        if not is_e164(to):
            raise SandboxError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service:
            raise SandboxError(400, 21603, "A 'From' phone number is required.")
        if not body and not media_urls and not content_sid:
            raise SandboxError(400, 21602, "Message body is required.")
        if len(body) > 1600:
            raise SandboxError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        # One write transaction: an injected fault is used up (and committed) or the message
        # is stored, never both; the write lock is the sandbox's main cost under load.
        refusal: SandboxError | None = None
        with self.db.session() as session:
            refusal = _take_fault(session)
            if refusal is None:
                senders = [s for s in (from_, service) if s]
                conn = session.connection()
                st = _statements(conn.dialect)
                if st.opted_out.run(conn, [{"number": to, "sender": s} for s in senders]):
                    raise SandboxError(400, 21610, "Attempt to send to unsubscribed recipient")
                message = SandboxMessage(
                    sid=new_sid("MM" if media_urls else "SM"),
                    account_sid=self.settings.account_sid,
                    messaging_service_sid=service,
                    from_number=from_ or self.settings.default_from,
                    to_number=to,
                    body=body,
                    media_urls=media_urls,
                    status="accepted" if service and not from_ else "queued",
                    direction="outbound-api",
                    num_segments=max(count_segments(body).segments, 1),
                    status_callback=callback,
                    content_sid=content_sid,
                    date_created=received,
                    date_updated=received,
                )
                row = {key: getattr(message, key) for key in MESSAGE_KEYS}
                ((message.id,),) = st.insert.run(conn, row)
                answer = to_json(message)
        if refusal is not None:
            raise refusal
        self._start_callbacks(message.sid, callback, to, answer["status"])
        return answer

    def fetch(self, sid: str) -> dict[str, Any]:
        """Return one message."""
        with self.db.read() as session:
            return to_json(self._get(session, sid))

    def update(self, sid: str, form: Mapping[str, str]) -> dict[str, Any]:
        """Redact (Body="") or cancel (Status=canceled) a message."""
        with self.db.session() as session:
            message = self._get(session, sid)
            if "Body" in form:
                if form["Body"] != "":
                    raise SandboxError(
                        400, 20001, "A message's Body can only be redacted (set to empty)."
                    )
                message.body = ""
            if form.get("Status"):
                if form["Status"] != "canceled" or message.status != "scheduled":
                    raise SandboxError(400, 20001, "Only a scheduled message can be canceled.")
                message.status = "canceled"
            message.date_updated = utcnow()
            return to_json(message)

    def delete(self, sid: str) -> None:
        """Delete a message."""
        with self.db.session() as session:
            session.delete(self._get(session, sid))

    def list_messages(self, args: Mapping[str, str], base_path: str) -> dict[str, Any]:
        """Return one page of messages, newest first, in Twilio's paging envelope."""
        try:
            page_size = int(args.get("PageSize") or 50)
            page = int(args.get("Page") or 0)
        except ValueError:
            raise SandboxError(400, 20001, "PageSize and Page must be integers") from None
        if not 1 <= page_size <= 1000:
            raise SandboxError(400, 20001, "PageSize must be between 1 and 1000")
        query = select(SandboxMessage).where(
            SandboxMessage.account_sid == self.settings.account_sid
        )
        if args.get("To"):
            query = query.where(SandboxMessage.to_number == args["To"])
        if args.get("From"):
            query = query.where(SandboxMessage.from_number == args["From"])
        sent = SandboxMessage.date_sent
        if args.get("DateSent"):
            day = _parse_day(args["DateSent"])
            query = query.where(sent >= day, sent < day + timedelta(days=1))
        if args.get("DateSent<"):
            query = query.where(sent <= _parse_when(args["DateSent<"]))
        if args.get("DateSent>"):
            query = query.where(sent >= _parse_when(args["DateSent>"]))
        token = args.get("PageToken") or ""
        if token.startswith("PA") and token[2:].isdigit():
            query = query.where(SandboxMessage.id < int(token[2:]))
        query = query.order_by(SandboxMessage.id.desc()).limit(page_size + 1)
        with self.db.read() as session:
            rows = list(session.scalars(query))
        has_more = len(rows) > page_size
        rows = rows[:page_size]
        filters = {
            k: args[k] for k in ("To", "From", "DateSent", "DateSent<", "DateSent>") if args.get(k)
        }
        first_uri = _uri(base_path, {**filters, "PageSize": str(page_size), "Page": "0"})
        next_uri = None
        if has_more:
            next_uri = _uri(
                base_path,
                {
                    **filters,
                    "PageSize": str(page_size),
                    "Page": str(page + 1),
                    "PageToken": f"PA{rows[-1].id}",
                },
            )
        return {
            "messages": [to_json(m) for m in rows],
            "end": page * page_size + len(rows) - 1 if rows else 0,
            "first_page_uri": first_uri,
            "next_page_uri": next_uri,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": page * page_size,
            "uri": _uri(base_path, {**args}),
        }

    def _get(self, session: Session, sid: str) -> SandboxMessage:
        message = session.scalar(
            select(SandboxMessage).where(
                SandboxMessage.sid == sid, SandboxMessage.account_sid == self.settings.account_sid
            )
        )
        if message is None:
            raise SandboxError(
                404,
                20404,
                f"The requested resource {message_uri(self.settings.account_sid, sid)} "
                "was not found",
            )
        return message

    # Account, phone numbers, Messaging Service (read-only, for `twilio-chat doctor`) ------
    def account(self) -> dict[str, Any]:
        """Return the sandbox's account in Twilio's Account JSON."""
        sid = self.settings.account_sid
        uri = f"/{API_VERSION}/Accounts/{sid}.json"
        return {
            "auth_token": self.settings.auth_token,  # Twilio returns it to its own holder
            "date_created": rfc2822(SANDBOX_EPOCH),
            "date_updated": rfc2822(SANDBOX_EPOCH),
            "friendly_name": "Sandbox",
            "owner_account_sid": sid,
            "sid": sid,
            "status": "active",
            "subresource_uris": {
                "messages": uri.replace(".json", "/Messages.json"),
                "incoming_phone_numbers": uri.replace(".json", "/IncomingPhoneNumbers.json"),
            },
            "type": "Full",
            "uri": uri,
        }

    def number_json(self) -> dict[str, Any] | None:
        """Return the sandbox's one phone number (our default From) as an IncomingPhoneNumber."""
        number = self.settings.default_from
        if not number:
            return None
        sid = "PN" + hashlib.sha256(number.encode()).hexdigest()[:32]
        account = self.settings.account_sid
        return {
            "account_sid": account,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "capabilities": {"voice": False, "sms": True, "mms": True, "fax": False},
            "date_created": rfc2822(SANDBOX_EPOCH),
            "date_updated": rfc2822(SANDBOX_EPOCH),
            "friendly_name": number,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": number,
            "sid": sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": f"{self.settings.base_url}/twilio/inbound",
            "status": "in-use",
            "status_callback": "",
            "status_callback_method": "POST",
            "trunk_sid": None,
            "type": "local",
            "uri": f"/{API_VERSION}/Accounts/{account}/IncomingPhoneNumbers/{sid}.json",
            "voice_application_sid": "",
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": "",
            "voice_method": "POST",
            "voice_url": "",
        }

    def list_numbers(self, args: Mapping[str, str], base_path: str) -> dict[str, Any]:
        """List the account's phone numbers (filter `PhoneNumber`: partial, `*` any digit)."""
        try:
            page_size = int(args.get("PageSize") or 50)
        except ValueError:
            raise SandboxError(400, 20001, "PageSize must be an integer") from None
        if not 1 <= page_size <= 1000:
            raise SandboxError(400, 20001, "PageSize must be between 1 and 1000")
        number = self.number_json()
        numbers = [number] if number else []
        wanted = args.get("PhoneNumber")
        if wanted:
            pattern = re.escape(wanted).replace(r"\*", r"\d")
            numbers = [n for n in numbers if re.search(pattern, n["phone_number"])]
        filters = {k: args[k] for k in ("PhoneNumber", "FriendlyName") if args.get(k)}
        return {
            "end": max(len(numbers) - 1, 0),
            "first_page_uri": _uri(base_path, {**filters, "PageSize": str(page_size), "Page": "0"}),
            "incoming_phone_numbers": numbers,
            "next_page_uri": None,
            "page": 0,
            "page_size": page_size,
            "previous_page_uri": None,
            "start": 0,
            "uri": _uri(base_path, {**args}),
        }

    def messaging_service(self, sid: str) -> dict[str, Any]:
        """Return the configured Messaging Service (TWILIO_MESSAGING_SERVICE_SID); 404 otherwise."""
        if sid != self.settings.twilio_messaging_service_sid:
            raise SandboxError(404, 20404, f"The requested resource /Services/{sid} was not found")
        url = f"https://messaging.twilio.com/v1/Services/{sid}"
        return {
            "account_sid": self.settings.account_sid,
            "area_code_geomatch": True,
            "date_created": SANDBOX_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "date_updated": SANDBOX_EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "fallback_method": "POST",
            "fallback_to_long_code": True,
            "fallback_url": None,
            "friendly_name": "Sandbox Messaging Service",
            "inbound_method": "POST",
            "inbound_request_url": f"{self.settings.base_url}/twilio/inbound",
            "links": {"phone_numbers": f"{url}/PhoneNumbers"},
            "mms_converter": True,
            "scan_message_content": "inherit",
            "sid": sid,
            "smart_encoding": True,
            "status_callback": None,
            "sticky_sender": True,
            "synchronous_validation": True,
            "url": url,
            "us_app_to_person_registered": False,
            "use_inbound_webhook_on_number": False,
            "usecase": "undeclared",
            "validity_period": 14400,
        }

    # Status callbacks ---------------------------------------------------------------
    def _start_callbacks(self, sid: str, url: str | None, to: str, initial: str) -> None:
        steps: Steps = []
        if initial == "accepted":
            steps.append(("queued", None))
        steps.append(("sent", None))
        failing = FAILING_SUFFIXES.get(to[-4:])
        steps.append(("undelivered", failing) if failing else ("delivered", None))
        self._next_callback(sid, url, steps)

    def _next_callback(self, sid: str, url: str | None, steps: Steps) -> None:
        """Schedule the first of `steps`; each step schedules the next once it is done."""
        if steps:
            CALLBACKS.schedule(
                self.settings.sandbox_callback_delay, lambda: self._callback(sid, url, steps)
            )

    def _callback(self, sid: str, url: str | None, steps: Steps) -> None:
        """Move a message to its next status and post that status callback (in order)."""
        status, error = steps[0]
        now = utcnow()
        values: dict[str, Any] = {
            "message_sid": sid,
            "status": status,
            "now": now,
            "date_sent": now if status == "sent" else None,
            "error_code": error or None,
            "error_message": ERROR_MESSAGES.get(error) if error else None,
        }
        try:
            with self.db.session() as session:
                conn = session.connection()
                found = _statements(conn.dialect).advance.run(conn, values)
            row = found[0] if found else None
            if row is None:
                return  # deleted meanwhile: Twilio says no more about it
            account_sid, from_number, to_number, service_sid = row
            form = {
                "MessageSid": sid,
                "SmsSid": sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": account_sid,
                "From": from_number or "",
                "To": to_number,
                "ApiVersion": API_VERSION,
            }
            if service_sid:
                form["MessagingServiceSid"] = service_sid
            if error:
                form["ErrorCode"] = str(error)
            if url:
                self._post_signed(url, form, CALLBACKS.http())
        except Exception:
            log.exception("sandbox: status callbacks for %s stopped", sid)
            return
        self._next_callback(sid, url, steps[1:])

    def _post_signed(
        self, url: str, form: dict[str, str], http: urllib3.PoolManager | None = None
    ) -> int:
        signature = self.gateway.sign(url, form)
        if http is None:  # the phone simulator: now and then, from any process
            return requests.post(
                url, data=form, headers={"X-Twilio-Signature": signature}, timeout=15
            ).status_code
        answer = http.request(
            "POST",
            url,
            fields=form,
            encode_multipart=False,
            headers={"X-Twilio-Signature": signature},
            timeout=15,
        )
        return answer.status

    # Phone simulator ---------------------------------------------------------------
    def simulate_inbound(
        self, from_: str, body: str, media_urls: list[str] | None = None, to: str | None = None
    ) -> dict[str, Any]:
        """Text the app from a simulated handset: a signed inbound webhook exactly as Twilio's."""
        media_urls = media_urls or []
        to = to or self.settings.default_from or ""
        if not is_e164(from_):
            raise InvalidInput(
                N_("%(number)s is not a possible phone number in E.164 form like +15551234567."),
                field="from",
                number=repr(from_),
            )
        if not is_e164(to):
            raise InvalidInput(
                N_("%(number)s is not a possible phone number in E.164 form like +15551234567."),
                field="to",
                number=repr(to),
            )
        if not body and not media_urls:
            raise InvalidInput(N_("Write a message or add media."), field="body")
        if len(body) > 1600:
            raise InvalidInput(
                N_("The message is %(length)d characters; the limit is %(limit)d."),
                field="body",
                length=len(body),
                limit=1600,
            )
        for url in media_urls:
            if not url.startswith(("http://", "https://")):
                raise InvalidInput(
                    N_("Each media URL must start with http:// or https:// (got %(url)s)."),
                    field="media_urls",
                    url=repr(url),
                )
        service = self.settings.twilio_messaging_service_sid
        sid = new_sid("MM" if media_urls else "SM")
        word = body.strip().upper()
        with self.db.session() as session:
            session.add(
                SandboxMessage(
                    sid=sid,
                    account_sid=self.settings.account_sid,
                    messaging_service_sid=service,
                    from_number=from_,
                    to_number=to,
                    body=body,
                    media_urls=media_urls,
                    status="received",
                    direction="inbound",
                    num_segments=max(count_segments(body).segments, 1),
                    date_sent=utcnow(),
                )
            )
            senders = [s for s in (to, service) if s]
            if word in OPT_OUT_KEYWORDS:
                for sender in senders:
                    exists = session.scalar(
                        select(SandboxOptOut.id).where(
                            SandboxOptOut.sender == sender, SandboxOptOut.number == from_
                        )
                    )
                    if exists is None:
                        session.add(SandboxOptOut(sender=sender, number=from_))
            elif word in OPT_IN_KEYWORDS:
                session.execute(
                    delete(SandboxOptOut).where(
                        SandboxOptOut.number == from_, SandboxOptOut.sender.in_(senders)
                    )
                )
        form = inbound_form(self.settings.account_sid, sid, from_, to, body, media_urls, service)
        url = f"{self.settings.base_url}/twilio/inbound"
        status = self._post_signed(url, form)
        return {"sid": sid, "from": from_, "to": to, "body": body, "webhook_status": status}


def inbound_form(
    account_sid: str,
    sid: str,
    from_: str,
    to: str,
    body: str,
    media_urls: list[str],
    service_sid: str | None = None,
) -> dict[str, str]:
    """Build the form Twilio posts to an inbound-message webhook."""
    form = {
        "ToCountry": _region(to),
        "ToState": "",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media_urls)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": _region(from_),
        "To": to,
        "ToZip": "",
        "NumSegments": str(max(count_segments(body).segments, 1)),
        "MessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": API_VERSION,
    }
    if service_sid:
        form["MessagingServiceSid"] = service_sid
    for i, url in enumerate(media_urls):
        form[f"MediaUrl{i}"] = url
        form[f"MediaContentType{i}"] = mimetypes.guess_type(url)[0] or "image/jpeg"
    return form


def _region(number: str) -> str:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(number, None)) or ""
    except phonenumbers.NumberParseException:
        return ""


def _parse_day(value: str) -> datetime:
    try:
        d = date.fromisoformat(value[:10])
    except ValueError:
        raise SandboxError(400, 20001, f"Invalid DateSent {value!r}") from None
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _parse_when(value: str) -> datetime:
    try:
        if len(value) == 10:
            return _parse_day(value)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SandboxError(400, 20001, f"Invalid date {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _uri(base_path: str, params: Mapping[str, str]) -> str:
    from urllib.parse import urlencode

    query = urlencode(params)
    return f"{base_path}?{query}" if query else base_path

"""The sandbox's own store: a SQLite file apart from the app's database (SQLite or PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import requests
from sqlalchemy import inspect, select
from support import PHONE, Live, query, sandbox_path, sandbox_query

from twilio_chat.db.models import Base
from twilio_chat.sandbox.store import SandboxMessage, SandboxStore

FROM = "+15005550006"
SANDBOX_TABLES = {"sandbox_messages", "sandbox_opt_outs", "sandbox_faults"}
SANDBOX_SOURCE = Path(__file__).resolve().parents[2] / "src" / "twilio_chat" / "sandbox"


def _create(live: Live, body: str) -> str:
    base = f"{live.url}/sandbox/twilio/2010-04-01/Accounts/{live.settings.account_sid}"
    answer = requests.post(
        f"{base}/Messages.json",
        data={"To": PHONE, "From": FROM, "Body": body},
        auth=(live.settings.account_sid, live.settings.auth_token),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    sid: str = answer.json()["sid"]
    return sid


def _sids(path: Path) -> list[str]:
    store = SandboxStore(path)
    try:
        with store.read() as session:
            return list(session.scalars(select(SandboxMessage.sid).order_by(SandboxMessage.id)))
    finally:
        store.dispose()


def test_the_sandbox_keeps_its_state_in_its_own_file_beside_the_apps_data(
    live: Live, db_path: Path
) -> None:
    sid = _create(live, "kept by the sandbox")
    path = db_path.parent / "sandbox.db"  # beside DB_PATH, also when the app is on PostgreSQL
    assert live.settings.sandbox_path == path == sandbox_path(db_path)
    assert path.is_file()
    assert sandbox_query(db_path, "SELECT sid, body FROM sandbox_messages") == [
        (sid, "kept by the sandbox")
    ]
    # None of it is in the app's database (whose old sandbox tables, until the migration that
    # drops them, stay empty).
    for table in SANDBOX_TABLES & set(inspect(live.db.engine).get_table_names()):
        assert query(db_path, f"SELECT count(*) FROM {table}") == [(0,)], table  # noqa: S608


def test_sandbox_db_path_puts_the_store_where_it_says(
    live_factory: Callable[..., Live], db_path: Path, tmp_path: Path
) -> None:
    path = tmp_path / "elsewhere" / "twilio-side.db"
    live = live_factory(SANDBOX_DB_PATH=str(path))
    sid = _create(live, "elsewhere")
    assert _sids(path) == [sid]
    assert not (db_path.parent / "sandbox.db").exists()


def test_the_store_makes_its_tables_once_when_many_threads_start_together(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fresh" / "sandbox.db"
    stores = [SandboxStore(path) for _ in range(8)]  # as separate processes would, each its own
    failures: list[BaseException] = []

    def first_write(store: SandboxStore, n: int) -> None:
        try:
            with store.session() as session:
                session.add(
                    SandboxMessage(
                        sid=f"SM{n:032x}",
                        account_sid="AC" + "0" * 32,
                        to_number=PHONE,
                        status="queued",
                        direction="outbound-api",
                    )
                )
        except BaseException as exc:  # reported below: a thread cannot fail the test itself
            failures.append(exc)

    threads = [
        threading.Thread(target=first_write, args=(store, n)) for n, store in enumerate(stores)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.dispose()
    assert failures == []
    assert sorted(_sids(path)) == [f"SM{n:032x}" for n in range(8)]


def test_no_app_model_is_a_sandbox_table() -> None:
    assert not SANDBOX_TABLES & set(Base.metadata.tables)

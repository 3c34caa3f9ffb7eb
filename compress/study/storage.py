"""Where a study lives: SQLite (the default), any SQLAlchemy URL (PostgreSQL for many machines), or a journal file.

    sqlite:///results/<study>/study.db      one machine (several worker processes)
    postgresql://user@host:5432/db          many machines; needs the extra compress[postgres] (psycopg 3)
    journal:/shared/fs/study.log            machines that share only a filesystem (Optuna's JournalStorage)

SQLAlchemy storages use Optuna's heartbeat to find trials whose worker died; Optuna's JournalStorage has
none, so compress goes beyond it: a running trial stamps `heartbeat_at` every `heartbeat_seconds`, and a
worker fails trials silent for `stale_after_seconds` and retries them with Optuna's RetryHeartbeatStaleTrialCallback,
the same callback the SQL storages use. Passwords are never written to the study folder: a URL that had
one is recorded masked, and `--storage` (or PGPASSWORD) gives it again.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from compress.core.errors import CompressError, first_line
from compress.recipe.search import SearchSpec

log = logging.getLogger(__name__)
JOURNAL = "journal:"
STORAGE_ENV = "COMPRESS_STORAGE"  # the storage URL, instead of --storage (keeps a password out of shell history and ps)
POSTGRES_EXTRA = "pip install 'compress[postgres]'"


def masked(url: str) -> str:
    """The URL as it may be printed or saved: any password replaced by ***."""
    if url.startswith(JOURNAL) or "@" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: hide everything before the host
        return "***@" + url.rsplit("@", 1)[-1]


def _postgres(url: str) -> str:
    """A PostgreSQL URL with a driver that is installed (psycopg 3, or psycopg2), or one line naming the extra."""
    scheme, rest = url.split("://", 1)
    if "+" in scheme:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql://{rest}"
    if importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    raise CompressError(
        f"study storage {masked(url)} needs a PostgreSQL driver, which is not installed: {POSTGRES_EXTRA}"
    )


class _RetryOnce(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry, queued once per failed trial. Optuna goes beyond nothing here: on SQLite two workers that
    check for stale trials at the same moment can both fail the same trial (no row locks), and each would queue
    a retry; the second sees the first's and queues none."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        queued = (t.system_attrs.get("retry_history", [])[-1:] for t in study.get_trials(deepcopy=False))
        if [trial.number] in queued:
            return
        super().__call__(study, trial)


def _retry(spec: SearchSpec) -> RetryHeartbeatStaleTrialCallback:
    """The one retry rule for a dead worker's trial, for SQL storages (Optuna's heartbeat) and journals (ours)."""
    return _RetryOnce(max_retry=spec.max_retries, inherit_intermediate_values=True)


def open_storage(url: str, spec: SearchSpec) -> BaseStorage:
    """The Optuna storage behind `url`, with stale trials of dead workers failed and retried."""
    retry = _retry(spec)
    if url.startswith(JOURNAL):
        path = Path(url[len(JOURNAL) :].removeprefix("//")).expanduser()
        if not path.parent.is_dir():
            raise CompressError(
                f"journal storage {path}: folder {path.parent} does not exist; create it (on the shared filesystem) "
                "or pick another one"
            )
        return JournalStorage(JournalFileBackend(str(path)))
    given = url
    if url.startswith(("postgresql", "postgres://")):
        url = _postgres(url.replace("postgres://", "postgresql://", 1))
    sqlite = url.startswith("sqlite")
    for attempt in range(3):
        try:
            storage = RDBStorage(
                url,
                heartbeat_interval=spec.heartbeat_seconds,
                grace_period=spec.stale_after_seconds,
                heartbeat_stale_trial_callback=retry,
                # SQLite: a writer waits up to a minute for another process's transaction instead of failing in 5 s
                engine_kwargs={"pool_pre_ping": True} | ({"connect_args": {"timeout": 60}} if sqlite else {}),
            )
            break
        except Exception as e:  # sqlalchemy/driver errors: bad URL, server down, wrong password, missing database
            # Optuna creates its tables and alembic's version row on first open, unlocked: a process opening a new
            # database at the same moment (another worker, a dashboard) makes this one's create fail; they exist now
            if (
                any(
                    m in str(e)
                    for m in ("already exists", "UNIQUE constraint failed: alembic_version", "database is locked")
                )
                and attempt < 2
            ):
                time.sleep(0.5)
                continue
            raise CompressError(f"cannot open study storage {masked(given)}: {_reason(e)}") from None
    if sqlite:
        _serialize(storage.engine)
    return storage


def _serialize(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    Optuna claims a queued trial by reading WAITING and writing RUNNING with SELECT ... FOR UPDATE, which
    SQLite ignores; with pysqlite's lazy BEGIN two worker processes both read WAITING and both ran the same
    trial (seen under load: one renamed the other's run folder). Going beyond Optuna: SQLAlchemy's
    documented recipe for serializable SQLite transactions, applied to the storage's engine.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" below emits BEGIN instead

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while Optuna set up its tables predate the hooks


def _reason(e: Exception) -> str:
    """The driver's first line without SQLAlchemy's wrapper, and what to do about it."""
    text = first_line(e)
    text = re.sub(r"^\([\w.]+\)\s*", "", text).removeprefix("connection failed: ")
    if "password authentication failed" in text:
        return f"{text}; check the user and password in the URL"
    if "Connection refused" in text or "could not translate host name" in text or "timeout" in text.lower():
        return f"{text}; is the database server running and reachable there?"
    if "does not exist" in text:
        return f"{text}; create it first (createdb) or name an existing one in the URL"
    return f"{text}; check the URL and that the database server is reachable"


def reopen(recorded: str, override: str | None) -> BaseStorage:
    """The storage of a study folder's search.json (for reading: report, finalize); a masked password must be given
    again."""
    url = override or (os.environ.get(STORAGE_ENV) if "***" in recorded else None) or recorded
    if "***" in url:
        raise CompressError(
            f"the study storage {recorded} was recorded without its password; give it with --storage URL or "
            f"{STORAGE_ENV}=URL"
        )
    return open_storage(url, SearchSpec())


def native_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage)


@contextmanager
def heartbeat(trial: optuna.Trial, storage: BaseStorage, every: float) -> Iterator[None]:
    """While the body runs, stamp the trial alive every `every` seconds (storages without Optuna's heartbeat)."""
    if native_heartbeat(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                trial.set_user_attr("heartbeat_at", time.time())
            except Exception as e:  # the trial was failed as stale elsewhere: nothing more to stamp
                log.debug("heartbeat stopped: %s", e)
                return

    trial.set_user_attr("heartbeat_at", time.time())
    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale(study: optuna.Study, storage: BaseStorage, spec: SearchSpec) -> list[int]:
    """Fail running trials silent for `stale_after_seconds` and retry each once more; returns the numbers
    compress failed (SQL storages: Optuna fails those that have beaten at least once). Two workers doing
    this at once fail a trial only once."""
    beaten: set[int] = set()
    if isinstance(storage, RDBStorage):  # native_heartbeat, spelled for the type checker
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        beaten = _beaten(storage)
    now, failed = time.time(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        if trial_id in beaten:
            continue
        # a retry inherits its dead parent's user attributes, heartbeat_at included: a stamp older than the
        # trial's own start is the parent's (seen in CI: a freshly claimed retry was failed again at once)
        started = t.datetime_start.timestamp() if t.datetime_start else now
        seen = max(t.user_attrs.get("heartbeat_at", started), started)
        if now - seen <= spec.stale_after_seconds:
            continue
        try:
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        _retry(spec)(study, storage.get_trial(trial_id))
        failed.append(t.number)
        log.warning("trial %d was silent for %.0f s (its worker died?): failed and queued again", t.number, now - seen)
    return failed


def _beaten(storage: RDBStorage) -> set[int]:
    """Trials with a row in Optuna's heartbeat table. Optuna never fails a running trial without one, yet a worker
    killed between claiming a trial and its first beat leaves exactly that (seen in the kill -9 test under load):
    compress fails those by their start time, as it does for journals."""
    from sqlalchemy import text

    with storage.engine.connect() as connection:
        return {row[0] for row in connection.execute(text("SELECT trial_id FROM trial_heartbeats"))}

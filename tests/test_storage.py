"""Study storages for real: SQLite, a PostgreSQL server (Debian's package, started in a temporary folder),
Optuna's journal file; the report rendered in headless Chromium; the study read by optuna-dashboard.

Servers and browsers are real, never mocked. Where CI=true a missing one fails the test (.ci/run installs
them); elsewhere the test skips and says what to install.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from multiprocessing import Queue, get_context
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
import pytest
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from compress.recipe.search import SearchSpec
from compress.study.search import _finished_elsewhere
from compress.study.storage import fail_stale, masked, open_storage
from compress.study.workers import gpu_per_worker
from conftest import FINALIZE, write_recipe

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SEARCH = [sys.executable, "-m", "compress.cli", "-q", "search"]


def kill_then_resume(recipe: Path, storage: list[str], trials: Callable[[], list[FrozenTrial]]) -> list[FrozenTrial]:
    """Start a 2-worker search, kill -9 its whole process group once a trial finished and another runs, wait past
    stale_after_seconds, resume; check nothing finished was lost or duplicated and the killed trials were retried."""
    cmd = [*SEARCH, str(recipe), *storage]

    def start(*extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*cmd, "--workers", "2", *extra], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    proc = start()
    deadline, before, running = time.time() + 240, {}, []
    while time.time() < deadline and not running:
        time.sleep(0.5)
        assert proc.poll() is None, _failure(proc.stderr.read().decode()) if proc.stderr else proc.returncode
        try:
            now = trials()
        except Exception:  # the study is not created yet
            continue
        if any(t.state == TrialState.COMPLETE for t in now) and any(t.state == TrialState.RUNNING for t in now):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            before = {t.number: t.values for t in trials() if t.state == TrialState.COMPLETE}
            running = [t.number for t in trials() if t.state == TrialState.RUNNING]
            if not running:  # the running trial finished between the look and the kill: go on and kill again
                proc = start("--resume")
    assert before and running, "the search finished before it could be killed"
    time.sleep(5)  # older than stale_after_seconds
    resumed = subprocess.run([*cmd, "--workers", "2", "--resume"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, _failure(resumed.stderr)
    after = trials()
    done = {t.number: t.values for t in after if t.state == TrialState.COMPLETE}
    assert all(done.get(n) == v for n, v in before.items()), (before, done)  # every finished trial kept, unchanged
    assert len([t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]) >= 6, [
        (t.number, t.state) for t in after
    ]
    for n in running:  # the killed trials failed as stale and were retried once with the same parameters
        assert after[n].state == TrialState.FAIL, (n, after[n].state)
        retries = [t for t in after if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == n]
        assert len(retries) == 1, (n, [(t.number, t.state) for t in retries])
        # a trial killed while still sampling holds only part of its parameters; the retry keeps those and samples the
        # rest
        assert after[n].params.items() <= retries[0].params.items(), (n, after[n].params, retries[0].params)
    chains = [RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in after if t.state == TrialState.COMPLETE]
    # no trial finished twice
    assert len([c for c in chains if c is not None]) == len({c for c in chains if c is not None})
    folders = {p.name for p in (recipe.parent / "results" / "tiny" / "trials").iterdir()}
    assert {f"trial-{n:04d}" for n in done} <= folders  # every finished trial has its run folder
    return after


def _failure(stderr: str) -> str:
    """What a failed worker said: its traceback or error lines, not just the last screen of the log."""
    start = stderr.find("Traceback")
    if start < 0:
        return "\n".join(line for line in stderr.splitlines() if "error" in line.lower() or "warning" in line.lower())[
            -4000:
        ]
    return stderr[start : start + 6000]


def killable_recipe(tmp_path: Path, tiny_csv: Path, tiny_teacher_dir: Path, **search) -> Path:
    return write_recipe(
        tmp_path,
        tiny_csv,
        tiny_teacher_dir,
        trials=6,
        heartbeat_seconds=1,
        stale_after_seconds=4,
        prune=False,
        **search,
    )


@pytest.mark.integration
def test_sqlite_kill_minus_9_then_resume(tmp_path, tiny_csv, tiny_teacher_dir):
    recipe = killable_recipe(tmp_path, tiny_csv, tiny_teacher_dir)
    db = f"sqlite:///{tmp_path}/results/tiny/study.db"
    kill_then_resume(recipe, [], lambda: optuna.load_study(study_name="tiny", storage=db).trials)


@pytest.mark.integration
def test_journal_kill_minus_9_then_resume(tmp_path, tiny_csv, tiny_teacher_dir):
    """A cluster that shares only a filesystem: Optuna's journal file, with compress's own heartbeat."""
    recipe = killable_recipe(tmp_path, tiny_csv, tiny_teacher_dir)
    log = tmp_path / "shared" / "study.log"
    log.parent.mkdir()
    journal = lambda: optuna.load_study(study_name="tiny", storage=JournalStorage(JournalFileBackend(str(log))))
    kill_then_resume(recipe, ["--storage", f"journal:{log}"], lambda: journal().trials)
    info = json.loads((tmp_path / "results" / "tiny" / "search.json").read_text())
    assert info["storage"] == f"journal:{log}"


def test_journal_bad_path(tmp_path, tiny_csv, tiny_teacher_dir, cli):
    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1)
    code, _, err = cli("search", recipe, "--storage", f"journal:{tmp_path}/not-mounted/study.log")
    assert (
        code == 2 and f"folder {tmp_path}/not-mounted does not exist" in err and len(err.strip().splitlines()) == 1
    ), err
    assert not (tmp_path / "results" / "tiny" / "search.json").exists()


@pytest.mark.integration
def test_postgres_two_workers_kill_minus_9_resume_then_report(
    postgres, tmp_path, tiny_csv, tiny_teacher_dir, cli, monkeypatch
):
    """Two workers share a study on a real PostgreSQL server by name; a kill -9 loses nothing; the report reads it."""
    url = postgres.database("kill_resume")
    recipe = killable_recipe(tmp_path, tiny_csv, tiny_teacher_dir, finalize=FINALIZE | {"top_k": 1})
    rdb = url.replace("postgresql://", "postgresql+psycopg://")
    trials = kill_then_resume(
        recipe, ["--storage", url], lambda: optuna.load_study(study_name="tiny", storage=rdb).trials
    )
    folder = tmp_path / "results" / "tiny"
    info = json.loads((folder / "search.json").read_text())
    assert postgres.password not in json.dumps(info) and info["storage"] == masked(url) and "***" in info["storage"]
    code, _, err = cli("report", folder, "--out", tmp_path / "r")
    assert code == 2 and "recorded without its password" in err and "--storage" in err and not (tmp_path / "r").exists()
    monkeypatch.setenv("COMPRESS_STORAGE", url)
    code, _, err = cli("report", folder, "--out", tmp_path / "r")
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["trials"]["COMPLETE"] == len([t for t in trials if t.state == TrialState.COMPLETE]), summary[
        "trials"
    ]
    assert [f["name"] for f in summary["finals"]], summary  # finalize ran against the PostgreSQL study too


@pytest.mark.integration
def test_postgres_bad_inputs(postgres, tmp_path, tiny_csv, tiny_teacher_dir, cli, monkeypatch):
    from conftest import free_port

    recipe = write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=1)
    port = free_port()
    cases = [
        (
            f"postgresql://compress:pw@127.0.0.1:{port}/postgres",
            f'"127.0.0.1", port {port} failed: Connection refused; is the database server',
        ),
        (
            postgres.url(password="wrong"),
            'password authentication failed for user "compress"; check the user and password',
        ),
        (postgres.url("missing_db"), 'database "missing_db" does not exist; create it first'),
    ]
    for url, needle in cases:
        code, _, err = cli("search", recipe, "--storage", url)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (url, err)
        assert "wrong" not in err and ":pw@" not in err  # passwords are never printed
    url = postgres.database("two_spaces")
    assert cli("search", recipe, "--storage", url)[0] == 0
    changed = write_recipe(
        tmp_path, tiny_csv, tiny_teacher_dir, trials=1, space={"passes.convert.layers": {"choices": [1, 2]}}
    )
    code, _, err = cli("search", changed, "--storage", url, "--resume")
    assert (
        code == 2
        and "different recipe or search space" in err
        and "--force-new" in err
        and postgres.password not in err
    ), err
    import compress.study.storage as storage

    real = storage.importlib.util.find_spec
    monkeypatch.setattr(
        storage.importlib.util, "find_spec", lambda name: None if name.startswith("psycopg") else real(name)
    )
    code, _, err = cli("search", recipe, "--storage", url, "--resume")
    assert code == 2 and "needs a PostgreSQL driver, which is not installed: pip install 'compress[postgres]'" in err, (
        err
    )


@pytest.mark.integration
def test_postgres_study_opens_in_optuna_dashboard(postgres, tmp_path, tiny_csv, tiny_teacher_dir, cli):
    """optuna-dashboard (the extra compress[dashboard]) lists the study and its trials from the same server."""
    optuna_dashboard = pytest.importorskip("optuna_dashboard")
    url = postgres.database("dashboard")
    assert cli("search", write_recipe(tmp_path, tiny_csv, tiny_teacher_dir, trials=2), "--storage", url)[0] == 0
    app = optuna_dashboard.wsgi(url.replace("postgresql://", "postgresql+psycopg://"))
    server = make_server("127.0.0.1", 0, app, handler_class=Quiet)  # a real HTTP server, as `optuna-dashboard URL` runs
    Thread(target=server.serve_forever, daemon=True).start()

    def get(path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}{path}", timeout=30) as answer:
            return json.loads(answer.read())

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"], studies
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert len([t for t in detail["trials"] if t["state"] == "Complete"]) == 2, [t["state"] for t in detail["trials"]]
    server.shutdown()


class Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration
def test_report_in_a_real_browser(chromium, finished_study, tmp_path, cli):
    """Headless Chromium with the network cut renders index.html: one plotly marker per point, each named point
    (teacher form, baseline, final student) a trace and a legend entry of its own colour, pixels drawn."""
    code, _, err = cli("report", finished_study.folder, "--out", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "index.html").resolve()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    browser = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--proxy-server=127.0.0.1:9",  # nothing reachable: a page that needs a CDN draws no plot
        "--proxy-bypass-list=<-loopback>",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=15000",
        "--window-size=1280,2400",
    ]
    dom = subprocess.run([*browser, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    traces = re.split(r'<g class="trace scatter', dom)[1:]
    assert traces, f"no plotly scatter traces in the rendered page ({len(dom)} characters of DOM)"
    points = [len(re.findall(r'class="point"', t)) for t in traces]
    named = [b["name"] for b in summary["baselines"]] + [f["name"] for f in summary["finals"]]
    assert len(points) == 2 + len(named), (points, named)  # trials, the proxy front, then one trace per named point
    assert points[0] == summary["trials"]["COMPLETE"] and 1 <= points[1] <= points[0], points  # the front: a subset
    assert points[2:] == [1] * len(named), points
    legend = re.findall(r'class="legendtext"[^>]*>([^<]*)<', dom)
    for name in named:  # every named point in the legend, none as a label on the chart that could overlap
        assert any(text.startswith(name) for text in legend), (name, legend)
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    from compress.report.plots import PALETTE

    pixels = Counter(Image.open(shot).convert("RGB").getdata())
    for colour in PALETTE[: len(named)]:  # each named point's own colour is drawn (its marker and legend swatch)
        rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert pixels[rgb] > 20, (colour, pixels[rgb])


def test_gpu_workers_get_a_gpu_each():
    assert gpu_per_worker("cuda", 4, ["0", "1"]) == ["0", "1", "0", "1"]
    assert gpu_per_worker("auto", 2, ["2", "5", "7"]) == ["2", "5"]
    assert gpu_per_worker("cuda", 2, ["0"]) == [None, None]  # one GPU: shared, environment untouched
    assert gpu_per_worker("cpu", 2, ["0", "1"]) == [None, None]


def _claim_all(url: str, start: float, out: Queue) -> None:
    """Claim queued trials the way Optuna's workers do, from the moment `start` on (many processes at once)."""
    study = optuna.load_study(study_name="claims", storage=open_storage(url, SearchSpec()))
    time.sleep(max(0.0, start - time.time()))
    claimed = []
    while (trial_id := study._pop_waiting_trial_id()) is not None:
        claimed.append(trial_id)
    out.put(claimed)


@pytest.mark.integration
def test_sqlite_queued_trial_is_claimed_by_one_worker_only(tmp_path):
    """Four processes race for 40 queued trials on SQLite: each trial runs once (Optuna's FOR UPDATE is a no-op
    on SQLite; compress's storage begins every transaction IMMEDIATE)."""
    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="claims", storage=open_storage(url, SearchSpec()))
    for i in range(40):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    ctx = get_context("spawn")
    out: Queue = ctx.Queue()
    start = time.time() + 8  # after every process has imported optuna and opened the study
    procs = [ctx.Process(target=_claim_all, args=(url, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    claims = [tid for _ in procs for tid in out.get(timeout=120)]
    for p in procs:
        p.join()
    assert sorted(claims) == sorted(set(claims)) and len(claims) == 40, sorted(claims)


# trials made by hand here
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_sqlite_trial_killed_before_its_first_heartbeat_is_retried(tmp_path):
    """Optuna skips running trials that never beat; a worker killed between claiming a trial and its first beat
    would leave it RUNNING forever. compress fails it by its start time and queues it once."""
    spec = SearchSpec(heartbeat_seconds=1, stale_after_seconds=1)
    storage = open_storage(f"sqlite:///{tmp_path}/study.db", spec)
    study = optuna.create_study(study_name="beats", storage=storage)
    dead, alive = study.ask(), study.ask()
    dead.suggest_int("x", 0, 9)
    time.sleep(1.5)
    storage.record_heartbeat(alive._trial_id)  # alive: beating now
    assert fail_stale(study, storage, spec) == [dead.number]
    assert fail_stale(study, storage, spec) == []  # failed once, queued once
    states = {t.number: t.state for t in study.trials}
    assert states == {dead.number: TrialState.FAIL, alive.number: TrialState.RUNNING, 2: TrialState.WAITING}, states
    assert (
        study.trials[2].params == dead.params
        and RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[2]) == dead.number
    )


def test_journal_retry_is_not_failed_by_its_parents_heartbeat(tmp_path):
    """A retry inherits its dead parent's user attributes, heartbeat stamp included; once claimed it must count as
    alive from its own start, not be failed again at once by another worker (seen in CI: that worker then died on
    Optuna's 'Cannot tell a FAIL trial')."""
    spec = SearchSpec(heartbeat_seconds=1, stale_after_seconds=1)
    storage = open_storage(f"journal:{tmp_path}/study.log", spec)
    study = optuna.create_study(study_name="beats", storage=storage)
    dead = study.ask()
    dead.suggest_int("x", 0, 9)
    dead.set_user_attr("heartbeat_at", time.time())
    time.sleep(1.5)
    assert fail_stale(study, storage, spec) == [dead.number]
    retry = study.ask()  # claims the queued retry: RUNNING now, with the parent's old heartbeat_at
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(study.trials[retry.number]) == dead.number
    assert fail_stale(study, storage, spec) == []
    time.sleep(1.5)  # and once it is silent for stale_after_seconds from its own start, it is stale
    assert fail_stale(study, storage, spec) == [retry.number]


def test_worker_recognises_a_trial_finished_elsewhere(tmp_path):
    """When another worker fails a running trial as stale, this one's next write raises inside Optuna's optimize
    (the objective writes its score and constraints last, so that write comes before the tell); the search
    worker must know the error Optuna lets out and go on, not exit."""
    storage = open_storage(f"journal:{tmp_path}/study.log", SearchSpec())
    study = optuna.create_study(study_name="elsewhere", storage=storage)

    def objective(trial: optuna.Trial) -> float:
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)  # what fail_stale does elsewhere
        trial.set_user_attr("score", {})
        return 1.0

    with pytest.raises(Exception) as raised:
        study.optimize(objective, n_trials=1)
    assert _finished_elsewhere(raised.value), repr(raised.value)
    assert not _finished_elsewhere(ValueError("some other bug"))


def _open_at(url: str, start: float, out: Queue) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        open_storage(url, SearchSpec())
        out.put("ok")
    except Exception as e:
        out.put(repr(e))


@pytest.mark.integration
def test_sqlite_new_database_opened_by_many_processes_at_once(tmp_path):
    """Optuna creates its tables unlocked on first open; processes opening a new database together (workers, a
    dashboard, the kill test's poller) must all get it, not 'table studies already exists'."""
    ctx = get_context("spawn")
    out: Queue = ctx.Queue()
    urls = [f"sqlite:///{tmp_path}/study{i}.db" for i in range(2)]
    start = time.time() + 6  # after every process has imported optuna
    procs = [ctx.Process(target=_open_at, args=(url, start, out)) for url in urls for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
    assert results == ["ok"] * len(procs), results

"""Home page and app.py (first-start demo creation, sidebar) through AppTest."""

from pathlib import Path

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.data.store import SubjectStore


def test_home_empty_root(app_env):
    at = s.app_at()
    s.no_exceptions(at)
    assert at.title[0].value == "neuroalign"
    assert [m.value for m in at.metric] == ["0", "0", "0", "0"]
    assert any("No subjects yet" in i.value for i in at.info)
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert str(app_env["data"]) in captions and "cpu" in captions.lower()
    assert s.status_labels(at) == []  # NEUROALIGN_NO_DEMO=1


def _cards(at) -> dict[str, tuple[str, str | None]]:
    """Best-result card metrics: label -> (value, delta)."""
    return {m.label: (m.value, m.delta) for m in at.metric[4:]}


def test_home_populated_shows_best_result(app_populated):
    at = s.app_at("pages/home.py")
    s.no_exceptions(at)
    assert [m.value for m in at.metric[:4]] == ["1", "1", "1", "0"]
    subjects = at.dataframe[0].value  # the best result is a card, the subjects a table
    assert subjects["subject"].tolist() == ["m1"] and subjects["images"].tolist() == [48]
    results = s.load_json(app_populated["run"] / "results.json")
    cards = _cards(at)
    assert cards["image → neural"][0] == f"{results['test']['image_to_neural']['top1']:.3f}"
    assert cards["neural → image"][0] == f"{results['test']['neural_to_image']['top1']:.3f}"
    assert any(app_populated["run"].name in c.value and "best linear: ridge pixels" in c.value for c in at.caption)
    assert any(link.proto.page.endswith("pages/retrieval.py") or "retrieval" in link.proto.page
               for link in at.get("page_link"))


def test_best_result_has_the_best_linear_readout(app_populated):
    """Home's best result per subject: the gap to the best ridge baseline per direction; old runs (pixel
    ridge only) keep working."""
    from neuroalign.io_utils import atomic_write_json

    run = app_populated["run"]
    results = s.load_json(run / "results.json")
    at = s.app_at("pages/home.py")
    s.no_exceptions(at)
    top1, ridge = results["test"]["image_to_neural"]["top1"], results["baselines"]["ridge"]["image_to_neural"]["top1"]
    assert _cards(at)["image → neural"][1] == f"{top1 - ridge:+.3f} vs linear"
    blocks = {d: {"top1": 0.0, "top5": 0.1, "top10": 0.2, "mean_rank": 3.0, "median_rank": 3.0} for d in
              ("image_to_neural", "neural_to_image")}
    results["test"]["image_to_neural"]["top1"], results["test"]["neural_to_image"]["top1"] = 0.5, 0.2
    results["baselines"]["ridge"] = {**blocks, "n": 6}
    results["baselines"]["ridge_backbone"] = {"image_to_neural": {**blocks["image_to_neural"], "top1": 0.3},
                                              "neural_to_image": {**blocks["neural_to_image"], "top1": 0.4}, "n": 6}
    atomic_write_json(run / "results.json", results)
    at = s.app_at("pages/home.py")
    cards = _cards(at)
    assert cards["image → neural"] == ("0.500", "+0.200 vs linear")  # beats the backbone ridge
    assert cards["neural → image"] == ("0.200", "-0.200 vs linear")  # does not
    assert any("best linear: ridge backbone" in c.value for c in at.caption)


def _demo_done(root, timeout=30):
    """Wait for the server's demo job of `root` to end; its status."""
    from neuroalign.data import demo_job

    job = demo_job.current(root)
    assert job is not None, "no demo job was started"
    status = job.wait(timeout)
    assert not status.running
    return status


def test_first_start_creates_demo_with_status(app_env, monkeypatch):
    calls = []

    def fake_demo(self, size="default", seed=0):  # the real generator is tested by the data tests
        calls.append(self.root)
        s.write_subject(self.root, "demo-A")
        return ["demo-A"]

    monkeypatch.setattr(SubjectStore, "ensure_demo", fake_demo)
    monkeypatch.delenv("NEUROALIGN_NO_DEMO")
    at = s.app_at()
    s.no_exceptions(at)
    assert _demo_done(app_env["data"]).names == ("demo-A",)
    at.run()
    assert calls == [app_env["data"]]
    assert any("Demo subjects ready: demo-A" in label for label in s.status_labels(at))
    assert at.dataframe[0].value["subject"].tolist() == ["demo-A"]  # no run yet: the subjects table
    at.run()  # once per process and root: a rerun does not try again, and says "ready" only once
    assert len(calls) == 1 and not s.status_labels(at)


def _labels_anywhere(at, icon=None) -> list[str]:
    """Labels of every st.status box in the main area, inside fragments and containers too (only those
    showing `icon`, e.g. "spinner" for a running one, when given)."""
    out, todo = [], list(at.main.children.values())
    while todo:
        node = todo.pop(0)
        if getattr(node, "type", "") == "status" and (icon is None or node.proto.icon == icon):
            out.append(node.proto.label)
        todo.extend(getattr(node, "children", {}).values())
    return out


def test_demo_in_progress_is_shown_in_every_session(app_env, monkeypatch):
    """Issue 23 item 5: the demo is written by a job the server owns; a second browser session opened
    while it runs (a reload, another tab, a page opened by URL) shows it in progress, not "no
    subjects", and both end with the demo subjects."""
    import threading

    release, calls = threading.Event(), []

    def slow_demo(self, size="default", seed=0):
        calls.append(self.root)
        assert release.wait(30)
        s.write_subject(self.root, "demo-C")
        return ["demo-C"]

    monkeypatch.setattr(SubjectStore, "ensure_demo", slow_demo)
    monkeypatch.delenv("NEUROALIGN_NO_DEMO")
    try:
        first = s.app_at()
        second = s.app_at("pages/train.py")  # another session, deep link to a page that needs subjects
        for at in (first, second):
            s.no_exceptions(at)
            assert any(label.startswith("First start: creating the simulated demo subjects")  # still spinning
                       for label in _labels_anywhere(at, icon="spinner"))
        assert not any("No subjects yet" in i.value for i in second.info)
        assert any("being created" in i.value for i in second.info)
        assert any("being created" in i.value for i in first.info)  # Home's subjects section
    finally:
        release.set()
    _demo_done(app_env["data"])
    assert calls == [app_env["data"]]  # one job for both sessions
    for at in (first, second):
        at.run()
        s.no_exceptions(at)
        assert any("Demo subjects ready: demo-C" in label for label in s.status_labels(at))
    assert first.dataframe[0].value["subject"].tolist() == ["demo-C"]
    assert second.multiselect(key="train.subjects").value == ["demo-C"]


def test_navigation_is_built_before_the_demo_is_created(app_env, monkeypatch):
    """Issue 12 item 10: while the demo subjects are written, the sidebar already shows the app's
    navigation (not Streamlit's raw page list with an 'app' entry) and the sidebar."""
    from neuroalign.ui import shell

    calls = []
    real_nav = shell.navigation

    def nav():
        calls.append("navigation")
        return real_nav()

    def fake_demo(self, size="default", seed=0):
        calls.append("demo")
        s.write_subject(self.root, "demo-B")
        return ["demo-B"]

    monkeypatch.setattr(shell, "navigation", nav)
    monkeypatch.setattr(SubjectStore, "ensure_demo", fake_demo)
    monkeypatch.delenv("NEUROALIGN_NO_DEMO")
    at = s.app_at()
    s.no_exceptions(at)
    _demo_done(app_env["data"])
    assert calls.index("navigation") < calls.index("demo")
    at.run()
    assert any("Demo subjects ready: demo-B" in label for label in s.status_labels(at))
    assert at.title[0].value == "neuroalign"


def test_demo_failure_keeps_app_up(app_env, monkeypatch):
    def broken(self, size="default", seed=0):
        raise OSError("disk full")

    monkeypatch.setattr(SubjectStore, "ensure_demo", broken)
    monkeypatch.delenv("NEUROALIGN_NO_DEMO")
    (app_env["data"]).rmdir()  # also: the data root does not exist yet
    at = s.app_at()
    s.no_exceptions(at)
    assert _demo_done(app_env["data"]).error == "disk full"
    at.run()
    assert any("Could not create the demo subjects: disk full" in label for label in s.status_labels(at))
    assert at.title[0].value == "neuroalign"
    other = s.app_at("pages/runs.py")  # every session and page says so while there are no subjects
    assert any("Could not create the demo subjects: disk full" in label for label in s.status_labels(other))


def test_streamlit_config_keeps_data_out_of_the_file_watcher():
    """Issue 12 item 11: with the inotify watcher, the default ./data and ./runs (inside app.py's folder,
    which it watches recursively) flood the log with watchdog warnings; the app polls its sources instead."""
    import tomllib

    config = tomllib.loads((Path(s.APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "poll"
    assert config["server"]["maxUploadSize"] == 1024


def test_favicon_is_a_shipped_file_not_a_cdn_icon(app_env, monkeypatch):
    """Issue 23 item 14: page_icon is assets/favicon.png (served by this server), not a material icon name
    that every browser fetches from a font CDN."""
    import streamlit as st

    from neuroalign.ui import shell

    seen = []
    real = st.set_page_config
    monkeypatch.setattr(st, "set_page_config", lambda **kw: (seen.append(kw), real(**kw))[1])
    s.no_exceptions(s.app_at())
    assert seen and all(kw["page_icon"] == str(shell.FAVICON) for kw in seen)
    assert shell.FAVICON.is_file() and shell.FAVICON.parent.name == "assets"

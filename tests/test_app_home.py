"""Home page and app.py (first-start demo creation, sidebar) through AppTest."""

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


def test_home_populated_shows_best_result(app_populated):
    at = s.app_at("pages/home.py")
    s.no_exceptions(at)
    assert [m.value for m in at.metric] == ["1", "1", "1", "0"]
    subjects, best = at.dataframe[0].value, at.dataframe[1].value
    assert subjects["subject"].tolist() == ["m1"] and subjects["images"].tolist() == [48]
    results = s.load_json(app_populated["run"] / "results.json")
    assert best["top1 img→neu"].iloc[0] == results["test"]["image_to_neural"]["top1"]
    assert best["run"].iloc[0] == app_populated["run"].name
    assert any(link.proto.page.endswith("pages/retrieval.py") or "retrieval" in link.proto.page
               for link in at.get("page_link"))


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
    assert calls == [app_env["data"]]
    assert any("Demo subjects ready: demo-A" in label for label in s.status_labels(at))
    assert at.dataframe[0].value["subject"].tolist() == ["demo-A"]
    at.run()  # once per process and root: a rerun does not try again
    assert len(calls) == 1


def test_demo_failure_keeps_app_up(app_env, monkeypatch):
    def broken(self, size="default", seed=0):
        raise OSError("disk full")

    monkeypatch.setattr(SubjectStore, "ensure_demo", broken)
    monkeypatch.delenv("NEUROALIGN_NO_DEMO")
    (app_env["data"]).rmdir()  # also: the data root does not exist yet
    at = s.app_at()
    s.no_exceptions(at)
    assert any("Could not create the demo subjects: disk full" in label for label in s.status_labels(at))
    assert at.title[0].value == "neuroalign"

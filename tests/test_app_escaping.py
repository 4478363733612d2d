"""Issue 20 item 9: user-controlled strings (subject and run names, paths, messages carrying them) are
shown as text on every page kind -- rendered Markdown would fetch an image from a URL, add a link or
bold text. Each element's Markdown source must hold the crafted text escaped (`markdown_literal`) or
as a code span (`markdown_code`), never raw."""

from __future__ import annotations

import json

import app_support as s
from app_support import app_env, app_populated  # noqa: F401 (fixtures)

from neuroalign.text import markdown_code, markdown_literal
from neuroalign.training import runs as runs_io
from neuroalign.ui import keys

# a folder name (no '/'), so it can be a hand-placed subject or run folder
CRAFT = "![x](http:127.0.0.1:9) [link](http:evil.example) **bold** __b__ `tick`"
RAW = ("![x](", "[link](", "**bold**", "__b__")


def _literal(text: str) -> None:
    """`text` (an element's Markdown source) shows CRAFT as itself."""
    assert markdown_literal(CRAFT) in text or markdown_code(CRAFT) in text, text
    assert not any(r in text.replace(markdown_literal(CRAFT), "").replace(markdown_code(CRAFT), "")
                   for r in RAW), text


def _rename_run(run, name: str):
    target = run.with_name(name)
    run.rename(target)
    return target


def _crafted_subject_in(run) -> None:
    record = json.loads((run / "config.json").read_text())
    record["subject"]["name"] = CRAFT
    (run / "config.json").write_text(json.dumps(record))


def test_runs_page_names_and_messages(app_populated):
    run = _rename_run(app_populated["run"], f"20260101-000000_{CRAFT}_abcdef")
    runs_io.write_status(run, "failed", f"ValueError: variable {CRAFT!r} is not numeric")
    at = s.app_at("pages/runs.py")
    s.no_exceptions(at)
    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    s.no_exceptions(at)
    (failed,) = [e.value for e in at.error if e.value.startswith("This run failed")]
    _literal(failed)
    (box,) = at.checkbox
    _literal(box.label)
    # a damaged status: the problem line names the run
    (run / "status.json").write_text('{"state": "bogus"}')
    at = s.app_at("pages/runs.py")
    at.selectbox(key=keys.RUNS_ONE).set_value(str(run)).run()
    s.no_exceptions(at)
    problems = [e.value for e in at.error if "status.json" in e.value]
    assert problems and all(markdown_literal(CRAFT) in p for p in problems), problems
    for p in problems:
        _literal(p)


def test_result_pages_subject_name_in_warnings(app_populated):
    """Retrieval / Feature maps (the run picker): a run whose subject is not in the data folder."""
    _crafted_subject_in(app_populated["run"])
    for page in ("pages/retrieval.py", "pages/feature_maps.py"):
        at = s.app_at(page)
        s.no_exceptions(at)
        warnings = [w.value for w in at.warning if "not available in the data folder" in w.value]
        assert warnings, (page, [w.value for w in at.warning])
        _literal(warnings[0])


def test_home_card_and_sidebar(app_populated, monkeypatch, tmp_path):
    _crafted_subject_in(app_populated["run"])
    crafted_root = tmp_path / f"data `x` {CRAFT}"
    crafted_root.mkdir()
    monkeypatch.setenv("NEUROALIGN_DATA_DIR", str(crafted_root))
    at = s.app_at()
    s.no_exceptions(at)
    cards = [m.value for m in at.markdown if "test top-1" in m.value]
    assert cards, [m.value for m in at.markdown]
    _literal(cards[0])
    data_caption = next(c.value for c in at.sidebar.caption if c.value.startswith("**Data**"))
    assert data_caption == f"**Data** {markdown_code(crafted_root)}", data_caption
    assert data_caption.startswith("**Data** ``") and "`x`" in data_caption  # fenced past the path's backticks


def test_train_and_resume_messages(app_populated):
    at = s.app_at("pages/train.py")
    at.session_state[keys.TRAIN_ERRORS] = [f"{CRAFT}: subject {CRAFT!r} not found"]
    at.session_state[keys.RESUME_ERRORS] = [f"Cannot resume {CRAFT}: gone"]
    at.run()
    s.no_exceptions(at)
    texts = [e.value for e in at.error]
    assert len(texts) == 2, texts
    for text in texts:
        _literal(text)


def test_markdown_code_fences_any_backticks():
    assert markdown_code("runs/x") == "`runs/x`"
    assert markdown_code("a`b") == "``a`b``" and markdown_code("`x`") == "`` `x` ``"
    assert markdown_code("a``b\x1b") == "```a``b\\x1b```"

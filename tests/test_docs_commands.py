"""First contact: every `grinder ...` command in README.md and docs/ runs as written from a fresh clone,
every `--help` shows its help text whole, and the long commands report counts as a bar.

Commands are taken from fenced code blocks and indented code blocks (a `\\` at a line's end
continues it; `# ...` is a comment; leading `NAME=value` words are environment variables;
`grinder` and `.venv/bin/grinder` are run as `python -m grinder`). Each file's commands run in
order (a later one may read what an earlier one wrote) in a temporary folder holding what a fresh
clone holds and they read: a copy of the bundled sample lake, `strategies/` and `deploy/`, with
MLflow's store there too ($GRINDER_MLRUNS). Each must exit 0.

A command that cannot run here is listed in SKIP with its reason; nothing is skipped silently, and
an entry that matches no command fails the test (a skip outlives nothing it was for).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

# (file relative to the repository, text the command contains) -> why it does not run here.
SKIP: dict[tuple[str, str], str] = {
    ("README.md", "data ingest binance"): "needs vendor captures a fresh clone does not hold (tests/data ingest them)",
    ("README.md", "data ingest tardis"): "needs Tardis files a fresh clone does not hold (tests/data ingest them)",
    ("README.md", "data ingest hftbacktest"): "needs an hftbacktest .npz a fresh clone does not hold",
    ("README.md", "venue serve"): "serves until Ctrl-C (tests/live/test_first_session.py runs this session)",
    ("README.md", "grinder live"): "runs until Ctrl-C against a venue (tests/live/test_first_session.py)",
    ("docs/tracking.md", "grinder ui"): "serves MLflow's UI until Ctrl-C (tests/cli/test_tracking_cli.py)",
    ("docs/data/recording.md", "--out data/raw"): "records Binance's mainnet feed until Ctrl-C (network)",
    ("docs/data/recording.md", "--api-url"): "records from a running emulator (tests/live record tests)",
    ("docs/data/recording.md", "--root data/lake"): "reads the recording the skipped commands above would write",
    ("docs/ml.md", "rollback"): "needs a champion; on the sample the promotion before it refuses (as docs/ml.md says)",
    ("docs/portfolio.md", "ETHUSDT"): "ETHUSDT, synthetic/SYNBUSDT are not in the sample (tests/portfolio)",
}

# (file, text the command contains) -> (the exit code the docs give for it on the sample, why).
EXIT: dict[tuple[str, str], tuple[int, str]] = {
    ("docs/ml.md", "ml promote"): (5, "the gate refuses the sample's model, as docs/ml.md says (PromotionRefused)"),
}

CMD = re.compile(r"^((?:[A-Z_][A-Z0-9_]*=\S*\s+)*)(?:\.venv/bin/)?grinder(\s|$)")


def extract(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every `grinder` command in a code block of a Markdown file."""
    lines = path.read_text().splitlines()
    found: list[tuple[int, str]] = []
    fence = None
    i = 0
    while i < len(lines):
        line = lines[i]
        s = line.strip()
        if fence is None and s.startswith(("```", "~~~")):
            fence = s[:3]
            i += 1
            continue
        if fence is not None and s.startswith(fence):
            fence = None
            i += 1
            continue
        indented = fence is None and prev_blank_or_code(lines, i) and line.startswith("    ")
        if (fence is not None or indented) and CMD.match(s):
            start, text = i + 1, s
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            found.append((start, text))
        i += 1
    return found


def prev_blank_or_code(lines: list[str], i: int) -> bool:
    """An indented line is code when the block it is in starts after a blank line (not a list item's text)."""
    j = i
    while j > 0 and lines[j - 1].startswith("    "):
        j -= 1
    return j == 0 or not lines[j - 1].strip()


def commands() -> list[tuple[str, int, str, str | None]]:
    """(file, line, command, skip reason or None) for every documented command, in file order."""
    out = []
    for path in DOCS:
        rel = path.relative_to(REPO).as_posix()
        for line, cmd in extract(path):
            reasons = [why for (f, text), why in SKIP.items() if f == rel and text in cmd]
            out.append((rel, line, cmd, reasons[0] if reasons else None))
    return out


def argv(cmd: str) -> tuple[dict[str, str], list[str]]:
    """A command line's environment variables and its argv with `python -m grinder` for `grinder`."""
    words = shlex.split(cmd, comments=True)
    env = {}
    while "=" in words[0] and not words[0].endswith("grinder"):
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    assert words[0].endswith("grinder"), cmd
    return env, [sys.executable, "-m", "grinder", *words[1:]]


def fresh_clone(tmp: Path) -> Path:
    """What a fresh clone holds that the documented commands read, copied (they write beside it)."""
    work = tmp / "clone"
    shutil.copytree(REPO / "data" / "sample", work / "data" / "sample")
    for d in ("strategies", "deploy"):
        shutil.copytree(REPO / d, work / d, ignore=shutil.ignore_patterns("__pycache__"))
    return work


def test_the_skip_list_names_documented_commands_and_says_why():
    found = commands()
    for (f, text), why in SKIP.items():
        assert why.strip(), (f, text)
        assert any(c[0] == f and text in c[2] for c in found), f"SKIP entry {f}: {text!r} matches no command"
    for (f, text), (_code, why) in EXIT.items():
        assert why.strip() and any(c[0] == f and text in c[2] and c[3] is None for c in found), (f, text)
    assert sum(c[3] is None for c in found) >= 10, "too few documented commands run"


FILES = sorted({c[0] for c in commands()})


@pytest.mark.parametrize("doc", FILES)
def test_documented_commands_run_as_written(doc, tmp_path):
    work = fresh_clone(tmp_path)
    base = {k: v for k, v in os.environ.items() if k != "GRINDER_LAKE"}
    base["GRINDER_MLRUNS"] = str(work / "mlruns")
    base["COLUMNS"] = "200"
    ran = 0
    for f, line, cmd, skip in commands():
        if f != doc or skip:
            continue
        env, args = argv(cmd)
        code = next((c for (f_, text), (c, _why) in EXIT.items() if f_ == f and text in cmd), 0)
        r = subprocess.run(args, cwd=work, env={**base, **env}, capture_output=True, text=True, timeout=300)
        assert r.returncode == code, f"{doc}:{line}: {cmd}\nexit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        ran += 1
    if not ran:
        pytest.skip(f"every command of {doc} is in SKIP: " + "; ".join(
            f"{c[2]!r}: {c[3]}" for c in commands() if c[0] == doc))  # fmt: skip


# ---------------------------------------------------------------------------------------------- help


def _commands_of(cmd, path=()):
    """(path, click command) of `cmd` and every command under it."""
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands_of(sub, (*path, name))


def _flat(text: str) -> str:
    """Help text without rich's box drawing and with one space between words (wrapping moves words)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _shown(source: str) -> str:
    """What a help string from the source shows: `\\[` (escaped for rich) is `[`."""
    return source.replace("\\[", "[")


BRACKETED = re.compile(r"\\?\[[^\]\n]*\]")


def test_every_help_shows_its_bracketed_text_and_forms():
    """`[strategy]`, `[sweep]`, `lin:a:b:n`: text in square brackets and spec forms survive rich markup."""
    import typer
    from typer.testing import CliRunner

    from grinder.cli.main import app

    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands_of(root):
        texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
        r = runner.invoke(app, [*path, "--help"], env={"TERMINAL_WIDTH": "400", "COLUMNS": "400"})
        assert r.exit_code == 0, (path, r.output)
        shown = _flat(r.output)
        assert "\\[" not in shown, f"grinder {' '.join(path)} --help shows a backslash escape"
        for text in texts:
            # The first paragraph of a command's docstring is the summary; typer shows it all.
            for m in BRACKETED.finditer(text):
                want = _flat(_shown(m.group()))
                assert want in shown, f"grinder {' '.join(path)} --help lost {want!r}:\n{r.output}"
                checked += 1
            for m in re.finditer(r"\b\w+(?::\w+){2,}\b", text):  # lin:a:b:n and the like
                assert m.group() in shown, f"grinder {' '.join(path)} --help lost {m.group()!r}:\n{r.output}"
                checked += 1
    assert checked >= 10


# ------------------------------------------------------------------------------------------ progress

SAMPLE = REPO / "data" / "sample" / "lake"
PARAMS = {"interval": 1, "half_spread": 2, "order_qty": 0.1, "max_position": 5}


class Recorder:
    """A Progress that writes down what it is told, in order."""

    def __init__(self, log: list | None = None):
        self.log = [] if log is None else log

    @contextlib.contextmanager
    def stage(self, text):
        self.log.append(("stage", text))
        yield lambda _text: None

    @contextlib.contextmanager
    def count(self, text, total):
        self.log.append(("count", text, total))
        yield lambda done, total_: self.log.append(("update", done, total_))

    def warn(self, text):
        self.log.append(("warn", text))


def counted(log: list) -> tuple[int, list[tuple[int, int]]]:
    """The first count's total and its updates."""
    i = next(i for i, e in enumerate(log) if e[0] == "count")
    return log[i][2], [e[1:] for e in log[i + 1 :] if e[0] == "update"]


def test_the_console_draws_a_count_as_a_bar_with_eta_on_a_terminal(monkeypatch):
    import io

    from rich.console import Console

    from grinder.cli import common

    buf = io.StringIO()
    monkeypatch.setattr(common, "err", Console(file=buf, force_terminal=True, width=120))
    with common.ConsoleProgress().count("sweeping 4 parameter sets", 4) as update:
        assert update is not None
        update(1, 4)
        update(3, 5)  # the total may change as the work is learnt
    shown = buf.getvalue()
    assert "sweeping 4 parameter sets" in shown and "━" in shown and "%" in shown
    assert re.search(r"-:--:--|\d+:\d\d:\d\d", shown), shown  # rich's TimeRemainingColumn
    monkeypatch.setattr(common, "err", Console(file=io.StringIO(), force_terminal=False))
    with common.ConsoleProgress().count("piped", 4) as update:
        assert update is None  # nothing drawn into a pipe or a log


def test_sweep_counts_every_backtest(tmp_path):
    from grinder import sweep_job

    rec = Recorder()
    grid = {"interval": "1,2", "half_spread": "1,2"}
    sweep_job("static_grid", grid=grid, params={"order_qty": 0.1, "max_position": 5}, train=0.6, root=SAMPLE,
              out_dir=tmp_path, track=False, report=False, progress=rec)  # fmt: skip
    total, updates = counted(rec.log)
    assert total == 4 * 2  # sets x windows (in and out of sample)
    assert updates and updates[-1] == (total, total) and [d for d, _ in updates] == sorted(d for d, _ in updates)


def test_portfolio_counts_candidates_and_picks(tmp_path):
    from grinder import portfolio_job

    rec = Recorder()
    portfolio_job("static_grid", ["BTCUSDT"], k=1, lookback_s=120, params=PARAMS, root=SAMPLE, out_dir=tmp_path,
                  report=False, progress=rec)  # fmt: skip
    total, updates = counted(rec.log)
    assert total == 2 and updates[-1] == (2, 2)


def test_data_check_speaks_before_it_loads_and_counts_its_steps(monkeypatch):
    from typer.testing import CliRunner

    import grinder.data.tape
    from grinder.cli import data
    from grinder.cli.main import app

    log: list = []
    monkeypatch.setattr(data, "ConsoleProgress", lambda: Recorder(log))
    load = grinder.data.tape.load_tape
    monkeypatch.setattr(grinder.data.tape, "load_tape", lambda *a, **k: log.append(("load",)) or load(*a, **k))
    args = ["data", "check", "--symbol", "BTCUSDT", "--root", str(SAMPLE), "--start", "2024-08-08T23:55",
            "--end", "2024-08-08T23:56"]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert log[0][0] == "count" and log.index(("update", 0, 3)) < log.index(("load",))
    assert counted(log) == (3, [(0, 3), (1, 3), (2, 3), (3, 3)])


def test_ingest_speaks_before_it_parses_and_counts_its_bytes(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import grinder.data.ingest
    from grinder.cli import data
    from grinder.cli.main import app
    from grinder.errors import DataError

    log: list = []
    monkeypatch.setattr(data, "ConsoleProgress", lambda: Recorder(log))

    def parse(*_a, progress=None):
        log.append(("parse", progress is not None))
        raise DataError("stopped here by the test")

    monkeypatch.setattr(grinder.data.ingest, "parse", parse)
    capture = tmp_path / "btcusdt_20240808.gz"
    capture.write_bytes(b"x" * 1234)
    r = CliRunner().invoke(app, ["data", "ingest", "binance", str(capture), "--root", str(tmp_path / "lake")])
    assert r.exit_code == 2 and "stopped here by the test" in r.output
    # The bar counts the input's bytes (its total known before anything is read) and reaches the parser.
    assert log[:3] == [("count", log[0][1], 1234), ("update", 0, 1234), ("parse", True)]

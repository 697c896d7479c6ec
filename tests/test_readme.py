"""Every command and snippet of README.md runs, in order, in one fresh folder (as a newcomer would run
them after the quick start), and every command of examples/README.md parses.

A README command is run unless its comment says `# needs: ...` (a GPU, a Ray cluster, a webcam, a
stream): those are parsed by the CLI's own parser and their `--model` checked as the CLI checks it before
torch loads. A command that needs such hardware must say so, and one that says so must need it. The test
command is not run (it is this suite); it must equal the one `.ci/run` calls. The measurement commands of
examples/README.md run for minutes to hours: each is parsed by its script's own argument parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import runpy
import shlex
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolocam.cli import main
from yolocam.cli.main import build_parser
from yolocam.cli.options import check_model_arg

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLES = ROOT / "examples" / "README.md"
NEEDS = re.compile(r"#\s*needs:\s*(\S.*)$")


# --------------------------------------------------------------------------- reading the files
def fenced(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ```bash and ```python block, in order."""
    return re.findall(r"^```(bash|python)\n(.*?)^```", text, flags=re.S | re.M)


def command_lines(body: str) -> list[tuple[str, list[str], str | None]]:
    """Per logical line of a bash block (continuations joined): (the line without its comment, its
    tokens, what its `# needs:` comment names or None)."""
    out = []
    for line in body.replace("\\\n", " ").splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens:
            needs = NEEDS.search(line)
            out.append((" ".join(tokens), tokens, needs.group(1).strip() if needs else None))
    return out


def simple_commands(tokens: list[str]) -> list[list[str]]:
    """A line's commands joined by `&&`."""
    parts, cur = [], []
    for t in tokens:
        if t == "&&":
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    return [*parts, cur]


def ci_test_command() -> str:
    """The command `.ci/run` runs (the README's test command)."""
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    found = [ln for ln in lines if "pytest" in ln and not ln.startswith("#")]
    assert len(found) == 1, found
    return " ".join(shlex.split(found[0]))


def needs_hardware(argv: list[str]) -> bool:
    """A yolocam command (as the CLI parses it) that cannot run on a CPU-only machine without a cluster, a
    camera or the network: a device other than the CPU, a Ray address, a webcam, the screen or a URL."""
    args = build_parser().parse_args(argv)
    if getattr(args, "device", None) not in (None, "cpu") or getattr(args, "ray", None):
        return True
    return any(re.fullmatch(r"\d+|screen|(rtsp|rtmp|https?)://.*", s) for s in getattr(args, "source", None) or [])


def check_pip(argv: list[str]) -> None:
    """`pip install [-e] SPEC...`: every SPEC is this project (`.`, `.[extra]`, `yolocam[extra]`) with
    extras pyproject.toml defines."""
    assert argv[:2] == ["pip", "install"], argv
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in (a for a in argv[2:] if a != "-e"):
        m = re.fullmatch(r"(\.|yolocam)(?:\[([\w,-]+)\])?", spec)
        assert m, f"pip install {spec}: expected this project"
        for extra in filter(None, (m.group(2) or "").split(",")):
            assert extra in project["optional-dependencies"], f"no extra {extra!r} in pyproject.toml"


# --------------------------------------------------------------------------- running README.md
class Session:
    """Runs the README's blocks in order in one folder; each block at most once."""

    def __init__(self, folder: Path):
        self.folder, self.blocks, self.results = folder, fenced(README.read_text(encoding="utf-8")), {}

    def result(self, k: int) -> dict:
        for j in range(k + 1):
            if j not in self.results:
                try:
                    self.results[j] = self._run(*self.blocks[j])
                except Exception as exc:  # reported by this block's test; later blocks still run
                    self.results[j] = exc
        if isinstance(self.results[k], Exception):
            raise self.results[k]
        return self.results[k]

    def _run(self, lang: str, body: str) -> dict:
        out, err, runs = io.StringIO(), io.StringIO(), []
        before = Path.cwd()
        os.chdir(self.folder)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                if lang == "python":
                    exec(compile(body, f"README.md python block: {body.splitlines()[0]}", "exec"), {"__name__": "__readme__"})
                else:
                    for line, tokens, needs in command_lines(body):
                        for argv in simple_commands(tokens):
                            start, err_start = out.tell(), err.tell()
                            try:
                                how = self._command(line, argv, needs)
                            except (AssertionError, SystemExit) as exc:
                                raise AssertionError(f"{exc}\n{err.getvalue()[err_start:][-3000:]}") from None
                            runs.append((line, argv, needs, how, out.getvalue()[start:]))
        finally:
            os.chdir(before)
        return {"stdout": out.getvalue(), "stderr": err.getvalue(), "runs": runs}

    @staticmethod
    def _command(line: str, argv: list[str], needs: str | None) -> str:
        if argv[0] == "pip":
            check_pip(argv)
            return "checked"
        if argv[:2] == ["bash", ".ci/install_chromium.sh"] or argv[:3] == ["python", "-m", "pytest"]:
            assert line == ci_test_command(), f"README's test command {line!r} differs from .ci/run's"
            return "checked"
        assert argv[0] == "yolocam", f"README command {line!r}: tests/test_readme.py does not know how to run it"
        assert bool(needs) == needs_hardware(argv[1:]), \
            f"{line!r}: commands that need a GPU, a cluster, a camera or a stream say '# needs: ...', and only those"
        if needs:
            args = build_parser().parse_args(argv[1:])  # exits 2 on a bad option
            check_model_arg(getattr(args, "model", None))
            return "parsed"
        rc = main(argv[1:])
        assert rc == 0, f"{line!r} exited {rc}"
        return "ran"


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    return Session(tmp_path_factory.mktemp("readme"))


def block_ids() -> list[str]:
    return [f"{k}-{lang}-{body.split()[0] if body.split() else ''}" for k, (lang, body)
            in enumerate(fenced(README.read_text(encoding="utf-8")))]


@pytest.mark.parametrize("k", range(len(block_ids())), ids=block_ids())
def test_readme_block_runs(session, k):
    r = session.result(k)
    assert "Traceback" not in r["stderr"], r["stderr"]


def find_block(session: Session, *words: str) -> int:
    hits = [k for k, (_, body) in enumerate(session.blocks) if all(w in body for w in words)]
    assert hits, f"README has no block with {words}"
    return hits[0]


def manifest_of(stdout: str, folder: Path) -> tuple[Path, dict]:
    path = re.search(r"manifest:\s+(\S+manifest\.json)", stdout)
    assert path, stdout
    path = folder / path.group(1)
    return path.parent, json.loads(path.read_text())


def test_readme_starts_with_the_install_the_demo_and_the_ci_test_command(session):
    lang, body = session.blocks[0]
    lines = [line for line, _, _ in command_lines(body)]
    assert lang == "bash" and lines[0] == "pip install -e . && yolocam demo" and lines[1] == ci_test_command()
    every = [line for lang, body in session.blocks if lang == "bash" for line, _, _ in command_lines(body)]
    assert every.count(ci_test_command()) == 1  # said once


def test_quick_start_demo_writes_the_summary_gallery_and_manifest(session):
    from yolocam.demo.scenes import make_scene
    from yolocam.output.render import summary_columns

    r = session.result(0)
    demo = session.folder / "runs" / "yolocam" / "demo"
    for name in ("manifest.json", "index.html", "summary.png", "scene.png"):
        assert (demo / name).is_file(), name
        assert str(Path("runs/yolocam/demo") / name) in r["stdout"] or name == "scene.png"
    manifest = json.loads((demo / "manifest.json").read_text())
    dets = manifest["images"][0]["detections"]
    assert manifest["complete"] and len(dets) >= 1 and all((demo / d["overlay"]).is_file() for d in dets)
    assert cv2.imread(str(demo / "scene.png")).shape == make_scene(0).image.shape
    summary = cv2.imread(str(demo / "summary.png"))
    cols = summary_columns(len(dets))  # the image with its boxes on top, then one 240 px crop tile per detection
    assert summary.shape[1] == cols * 240 and summary.shape[0] > int(np.ceil(len(dets) / cols)) * 262


def test_export_writes_a_folder_that_reads_back(session, monkeypatch):
    import yolocam

    monkeypatch.chdir(session.folder)  # the manifest records the image path as given
    session.result(find_block(session, "--out runs/explained"))
    out = session.folder / "runs" / "explained"
    assert (out / "index.html").is_file()
    [image] = yolocam.load_output(out)
    assert image.detections and all(d.heatmap.shape == image.image.shape[:2] for d in image.detections)


def test_task_demos_write_their_instance_data(session):
    r = session.result(find_block(session, "--model demo-obb"))
    for line, argv, _, how, stdout in r["runs"]:
        folder, manifest = manifest_of(stdout, session.folder)
        dets = manifest["images"][0]["detections"]
        assert how == "ran" and dets and all((folder / d["overlay"]).is_file() for d in dets), line
        assert (folder / "summary.png").is_file() and (folder / "index.html").is_file()
        model = argv[argv.index("--model") + 1]
        key = {"demo-seg": "segments", "demo-pose": "keypoints", "demo-obb": "polygon"}.get(model)
        if key:
            assert all(d.get(key) for d in dets), (model, key)
        if model == "demo-obb":
            assert all(len(d["polygon"]) == 4 for d in dets)
        if model == "demo-cls":
            assert all(d["box"][:2] == [0, 0] for d in dets)  # image-level: the box is the whole image


def test_hardware_commands_are_parsed_not_run(session):
    parsed = [run for k in range(len(session.blocks)) for run in session.result(k)["runs"] if run[3] == "parsed"]
    assert {"webcam", "Ray cluster"} <= {w for run in parsed for w in ("webcam", "Ray cluster") if w in run[2]}


def test_the_hardware_rule_tells_runnable_commands_from_the_others():
    assert needs_hardware(["explain", "0", "--track"]) and needs_hardware(["explain", "rtsp://h/s"])
    assert needs_hardware(["explain", "a.jpg", "--device", "cuda"]) and needs_hardware(["val", "--ray", "auto"])
    assert not needs_hardware(["explain", "a.jpg", "--ray", "--workers", "2"])
    assert not needs_hardware(["explain", "a.jpg", "--imgsz", "320", "--device", "cpu"])
    with pytest.raises(AssertionError):
        check_pip(["pip", "install", "yolocam[nope]"])


# --------------------------------------------------------------------------- parsing examples/README.md
class _Parsed(Exception):
    pass


def parse_script(path: Path, args: list[str]) -> argparse.Namespace:
    """The namespace `path`'s own argument parser makes of `args`: the script runs as `__main__` up to its
    parse_args call, then stops."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, a=None, namespace=None):
        raise _Parsed(original(self, a, namespace))

    argv, sys.argv = sys.argv, [str(path), *args]
    sys.path.insert(0, str(path.parent))
    argparse.ArgumentParser.parse_args = parse_and_stop
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed as done:
        return done.args[0]
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv = argv
        sys.path.remove(str(path.parent))
    raise AssertionError(f"{path} never parsed its arguments")


def example_commands() -> list[tuple[str, list[str]]]:
    return [(line, tokens) for lang, body in fenced(EXAMPLES.read_text(encoding="utf-8")) if lang == "bash"
            for line, tokens, _ in command_lines(body)]


def check_names(ns: argparse.Namespace) -> None:
    """Method names and layers:fuse pairs given to a benchmark exist."""
    from yolocam.cam import catalog
    from yolocam.cli.options import fuse_name, layers_spec

    for name in filter(None, (getattr(ns, "methods", None) or "").split(",")):
        assert name in catalog.method_names(), name
    for pair in filter(None, (getattr(ns, "grid", None) or "").split(",")):
        layers, fuse = pair.split(":")
        layers_spec(layers), fuse_name(fuse)
    for cand in filter(None, (getattr(ns, "candidates", None) or "").split(",")):
        method, layers, fuse = cand.split(":")
        assert method in catalog.method_names(), method
        layers_spec(layers), fuse_name(fuse)


@pytest.mark.parametrize("line,tokens", example_commands(), ids=[c[0][:60] for c in example_commands()])
def test_examples_readme_command_parses(line, tokens, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert tokens[0] == "python", line
    for tok in tokens:
        if re.fullmatch(r"[\w./-]+\.(py|pt)", tok):
            assert (ROOT / tok).is_file(), f"{line!r}: {tok} does not exist"
    if tokens[1:3] == ["-m", "yolocam"]:
        args = build_parser().parse_args(tokens[3:])
        check_model_arg(getattr(args, "model", None))
        return
    check_names(parse_script(ROOT / tokens[1], tokens[2:]))


def test_examples_readme_covers_every_benchmark_script():
    text = EXAMPLES.read_text(encoding="utf-8")
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    ran = {Path(tokens[1]).name for _, tokens in example_commands() if tokens[1].startswith("examples/")}
    assert scripts == ran, scripts ^ ran
    assert "python -m yolocam bench" in text

"""python -m snippets: list, show, copy (with its import closure) and run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snippets.__main__ import all_modules, closure, main
from snippets._catalog import ROOT, load_catalog


def test_list_names_every_module_summary_and_page(capsys: pytest.CaptureFixture) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for mod in all_modules():
        assert mod in out
    assert "Scaled dot-product attention from scratch" in out
    for topic in load_catalog().topics:
        assert topic.url("zh") in out


def test_show_prints_the_source(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "scaled-dot-product-attention"]) == 0
    assert capsys.readouterr().out == (ROOT / "snippets/attention/sdpa.py").read_text(encoding="utf-8")
    assert main(["show", "attention.masking"]) == 0
    assert "def masked_softmax" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["show", "sdpx"], ["copy", "masked-sofmax", "x"], ["run", "maskng"]])
def test_unknown_names_exit_2_with_suggestions(command: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(command)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err
    assert any(s in err for s in ("sdpa", "masked-softmax", "masking"))


def test_closure_follows_imports_transitively() -> None:
    assert closure(["attention.sdpa"]) == ["attention.sdpa", "attention.masking"]
    assert closure(["attention.masking"]) == ["attention.masking"]


def _run_isolated(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run Python with the repository removed from sys.path (only torch and the stdlib remain)."""
    prelude = textwrap.dedent(
        f"""
        import importlib.util, os, sys
        repo = os.path.realpath({str(ROOT)!r})
        sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.getcwd()) != repo]
        assert importlib.util.find_spec("snippets") is None, "the repository is still importable"
        sys.path.insert(0, os.getcwd())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + script], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_copy_runs_without_the_repository(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["copy", "scaled-dot-product-attention", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["masking.py", "sdpa.py"]
    copied = (tmp_path / "sdpa.py").read_text(encoding="utf-8")
    assert "from snippets" not in copied and "from .masking import" in copied
    # as a script (its demo) ...
    demo = _run_isolated("import runpy; runpy.run_path('sdpa.py', run_name='__main__')", tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert "max |ours - torch|" in demo.stdout
    # ... as a flat module ...
    flat = _run_isolated(
        "import torch, sdpa; q = torch.randn(2, 3, 4); "
        "torch.testing.assert_close(sdpa.scaled_dot_product_attention(q, q, q), "
        "torch.nn.functional.scaled_dot_product_attention(q, q, q)); print('ok')",
        tmp_path,
    )
    assert flat.returncode == 0 and flat.stdout.strip() == "ok", flat.stderr
    # ... and inside a package of the user's project (relative imports)
    pkg = tmp_path / "proj" / "mylib"
    assert main(["copy", "sdpa", str(pkg)]) == 0
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    nested = _run_isolated(
        "from mylib.sdpa import attention_weights; import torch; "
        "print(attention_weights(torch.randn(2, 3), torch.randn(4, 3)).shape)",
        tmp_path / "proj",
    )
    assert nested.returncode == 0 and "torch.Size([2, 4])" in nested.stdout, nested.stderr


def test_copy_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "masking.py").write_text("# mine\n", encoding="utf-8")
    assert main(["copy", "sdpa", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "masking.py").read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "sdpa.py").exists(), "nothing is written when anything would be overwritten"
    assert main(["copy", "sdpa", str(tmp_path), "--force"]) == 0
    assert "def masked_softmax" in (tmp_path / "masking.py").read_text(encoding="utf-8")


def test_run_executes_the_demo() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snippets", "run", "masking"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "masked_softmax" in proc.stdout


def test_every_module_demo_runs_quickly() -> None:
    """Every module's ``__main__`` demo runs as under ``python -m`` (the module is ``sys.modules['__main__']``,
    so a demo may pickle its own classes); pytest-codeblocks never runs them (__name__ is 'builtins')."""
    code = (
        "import runpy, sys\n"
        "for m in sys.argv[1:]:\n"
        "    sys.argv = [m]  # each demo sees no arguments, as under `python -m snippets.<module>`\n"
        "    runpy.run_module('snippets.' + m, run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *all_modules()], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_run_passes_arguments_to_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """`run NAME ARGS...` hands ARGS to the module as sys.argv[1:] (e.g. `run train full`) and restores argv."""
    from snippets import __main__ as cli

    seen = {}

    def fake_run_module(name: str, **kw) -> None:
        seen["name"], seen["argv"] = name, list(sys.argv)

    monkeypatch.setattr(cli.runpy, "run_module", fake_run_module)
    before = list(sys.argv)
    assert cli.main(["run", "train", "full", "--flag"]) == 0
    assert seen["name"] == "snippets.transformer.train"
    assert seen["argv"][1:] == ["full", "--flag"]
    assert sys.argv == before

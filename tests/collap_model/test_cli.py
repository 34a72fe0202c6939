from __future__ import annotations

import json
import subprocess
import sys

from collap_model.registry import DEFAULT_MODEL


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collap_model.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_info_json_describes_the_default_model() -> None:
    out = run("info", "--json", "--device", "cpu")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    for key in (
        "preset",
        "fingerprint",
        "sample_rate",
        "clip_seconds",
        "hop_seconds",
        "embedding_dim",
        "parameters",
        "trained",
    ):
        assert key in info
    assert info["preset"] == DEFAULT_MODEL
    assert info["fingerprint"].startswith(f"{DEFAULT_MODEL}-")
    assert isinstance(info["trained"], bool)
    assert info["parameters"]["total"] > info["parameters"]["trainable"] > 0


def test_bad_model_is_a_one_line_error() -> None:
    out = run("info", "--model", "/no/such/model")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "error" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\nfrom collap_model.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False")

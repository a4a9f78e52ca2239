"""`legato token secret|issue|verify`, and the client TLS/token flags' own errors."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from legato.access_tokens import TokenVerifier, read_secret
from legato.cli.main import main


def test_secret_issue_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "secret"
    assert main(["token", "secret", str(secret)]) == 0
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert main(["token", "secret", str(secret)]) == 3  # tokens made with it would stop working
    assert "give --force" in capsys.readouterr().err
    assert main(["token", "issue", "--namespace", "shop", "--namespace", "billing", "--secret-file", str(secret),
                 "--subject", "ann", "--ttl", "2h"]) == 0
    token = capsys.readouterr().out.strip()
    claims = TokenVerifier(read_secret(str(secret))).verify(token)
    assert claims.namespaces == {"shop", "billing"} and claims.subject == "ann"
    assert main(["token", "verify", token, "--secret-file", str(secret)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["namespaces"] == ["billing", "shop"] and shown["subject"] == "ann"


def test_bad_token_commands_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short"
    short.write_text("abc")
    assert main(["token", "issue", "--namespace", "shop", "--secret-file", str(short)]) == 3
    assert "needs at least 32" in capsys.readouterr().err
    secret = tmp_path / "secret"
    assert main(["token", "secret", str(secret)]) == 0
    assert main(["token", "issue", "--namespace", "shop", "--secret-file", str(secret), "--ttl", "soon"]) == 3
    assert "--ttl" in capsys.readouterr().err
    assert main(["token", "verify", "garbage", "--secret-file", str(secret)]) == 3
    assert "not a valid Legato token" in capsys.readouterr().err


def test_client_flags_that_contradict_each_other(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "t"
    token.write_text("x.y.z")
    assert main(["workflow", "describe", "--id", "w", "--token", "a", "--token-file", str(token)]) == 3
    assert "give the token once" in capsys.readouterr().err
    assert main(["workflow", "describe", "--id", "w", "--tls-cert", str(token)]) == 3
    assert "give both --tls-cert and --tls-key" in capsys.readouterr().err

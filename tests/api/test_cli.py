"""What ``regtune --help`` tells a newcomer: exit statuses, the files --out gets, where the API token comes from."""

from __future__ import annotations

import pytest

from api.cli import main


def _help(*command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines where it likes


def test_run_help_documents_exit_statuses_out_files_and_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("run", capsys=capsys)
    assert ("exit status: 0 the run finished and its report is written; 1 the run failed (the message says which "
            "stage and why); 2 invalid spec, data or storage URL, or a resume of a different spec") in text
    assert "130 interrupted (Ctrl-C): run the same command again to resume" in text
    assert "report.json, report.md, report.html and plots/<name>.png" in text
    assert "--fresh delete this job's studies" in text
    assert "a plain file path is a SQLite file" in text


@pytest.mark.parametrize("command", ["submit", "status"])
def test_client_commands_say_they_send_regtune_api_token(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert "when $REGTUNE_API_TOKEN is set, it is sent as the bearer token" in _help(command, capsys=capsys)

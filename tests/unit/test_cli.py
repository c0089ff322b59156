from federation.cli import main


def test_unknown_command_is_bad_input(capsys):
    assert main(["no-such-command"]) == 2


def test_version_lists_hail(capsys):
    assert main(["version"]) == 0
    assert "hail\t0.2.139" in capsys.readouterr().out

"""The dmn-localizer CLI: every subcommand exists; bad arguments give one line and exit 2."""
from pathlib import Path
import subprocess
import sys

import pytest

from dmn_localizer.cli import COMMANDS, main


def run_cli(*args):
    return subprocess.run([sys.executable, '-m', 'dmn_localizer', *args], capture_output=True,
                          text=True, timeout=120)


def test_help_lists_every_subcommand():
    r = run_cli('--help')
    assert r.returncode == 0
    for name in COMMANDS:
        assert name in r.stdout


@pytest.mark.parametrize('argv', [['no-such-command'], ['run', 'nowhere'],
                                  ['run', 'mapping', '--log-level', 'loud'], []])
def test_bad_arguments_one_line_exit_2(argv):
    r = run_cli(*argv)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'error:' in r.stderr and 'Traceback' not in r.stderr


def test_missing_files_one_line_exit_2(tmp_path):
    r = run_cli('run', 'localize', '--map-file', str(tmp_path / 'missing.dmnmap'))
    assert r.returncode == 2 and r.stderr.count('\n') == 1
    assert 'missing.dmnmap does not exist' in r.stderr
    # a model named without its suffix, as replay and eval take it, is found
    sharp = Path(__file__).resolve().parents[1] / 'models' / 'aligned_mazes_sharp'
    r = run_cli('run', 'localize', '--model', str(sharp), '--map-file',
                str(tmp_path / 'missing.dmnmap'))
    assert r.returncode == 2 and 'missing.dmnmap does not exist' in r.stderr, r.stderr
    r = run_cli('run', 'localize', '--model', str(tmp_path / 'nothing'))
    assert r.returncode == 2 and 'nothing does not exist' in r.stderr, r.stderr


@pytest.mark.parametrize('name', sorted(COMMANDS))
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, '--help'])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith('usage: dmn-localizer ' + name)

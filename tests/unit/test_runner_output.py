"""What `stillhouse run` shows on the console, keeps in run.log, and picks out as the error."""

import io

from stillhouse.progress import _LineStream
from stillhouse.runner import _Tee
from stillhouse.errors import ERROR_MARKER


def test_console_shows_tagged_lines_and_task_status_log_keeps_everything():
    console, log = io.StringIO(), io.StringIO()
    tee = _Tee(console, log, verbose=False)
    tee.write('    {"executorInput": {"inputs": ...}}\n')
    tee.write("12:00:01 - INFO - Executing task \x1b[96m'train-teacher'\x1b[0m\n    [stillhouse] teacher: ep")
    tee.write("och 1/4 loss 0.1\n")
    tee.write(f"    {ERROR_MARKER} prepare-data: seed data (a.csv): unknown label(s) 'x'\n")
    assert "executorInput" not in console.getvalue() and "executorInput" in log.getvalue()
    assert "Executing task 'train-teacher'" in console.getvalue()  # colour codes stripped
    assert "[stillhouse] teacher: epoch 1/4 loss 0.1" in console.getvalue()
    assert tee.errors == ["prepare-data: seed data (a.csv): unknown label(s) 'x'"]
    assert "unknown label" not in console.getvalue()  # printed once, by the run's final error, not twice


def test_verbose_console_gets_everything():
    console = io.StringIO()
    _Tee(console, io.StringIO(), verbose=True).write("anything at all\n")
    assert console.getvalue() == "anything at all\n"


def test_progress_redraws_become_lines_when_piped():
    out = io.StringIO()
    stream = _LineStream(out)
    stream.write("\r[stillhouse] labelling:  10%|#")
    stream.write("\r")
    stream.write("\r[stillhouse] labelling: 100%|##########|")
    assert out.getvalue().splitlines() == ["[stillhouse] labelling:  10%|#", "[stillhouse] labelling: 100%|##########|"]

"""The `ferry` command ends as the interpreter would (exit code, atexit handlers, threads, flushed output), only
without the module teardown (zygote.end_as_main): what a Ray step's driver and `ferry up` do after their work."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import atexit, os, sys, threading, time
    from ferry.local.engine.zygote import end_as_main

    def late_writer():
        time.sleep(0.2)
        print("the thread finished", end="")  # buffered: only the flush at the end writes it

    def program():
        threading.Thread(target=late_writer).start()
        atexit.register(lambda: print("atexit ran;", end=""))
        {body}

    os._exit(end_as_main(program))
""")


def ended(body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROGRAM.format(body=body)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("body", "code"), [("pass", 0), ("sys.exit(3)", 3), ("sys.exit('why')", 1),
                                             ("raise ValueError('boom')", 1)])
def test_the_exit_code_atexit_handlers_threads_and_buffered_output_are_as_the_interpreter_leaves_them(
        body: str, code: int) -> None:
    done = ended(body)
    assert done.returncode == code, done.stderr
    assert done.stdout == "the thread finishedatexit ran;"
    if "raise" in body:
        assert "ValueError: boom" in done.stderr  # the traceback the interpreter would print
    if "why" in body:
        assert done.stderr.strip() == "why"


def test_an_executor_left_open_does_not_keep_the_process_from_ending() -> None:
    """MLflow's artifact repository leaves a thread pool open; its idle workers end only when told to."""
    done = ended("import concurrent.futures; globals()['pool'] = concurrent.futures.ThreadPoolExecutor(2); "
                 "pool.submit(print, 'work;', end='').result()")  # the pool's worker is idle when the program ends
    assert done.returncode == 0, done.stderr
    # The late thread sleeps 0.2 s from before the pool is made: on a starved machine it may print first.
    assert done.stdout.removesuffix("atexit ran;") in ("work;the thread finished", "the thread finishedwork;"), \
        done.stdout


def test_the_ferry_command_keeps_its_exit_codes_and_messages() -> None:
    done = subprocess.run([sys.executable, "-m", "ferry.cli.app", "step", "nosuch", "--spec", "x", "--run", "y"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "unknown step 'nosuch'" in done.stderr

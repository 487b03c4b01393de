"""Exit codes of an interrupted command: 130 for SIGINT, 143 for SIGTERM, whatever exception type
reaches the top (Ray turns an interrupt during ray.get into a plain KeyboardInterrupt)."""

import os
import signal

import pytest

from proctor.cluster import signals


@pytest.fixture
def installed():
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signals._received.clear()
    signals.install()
    yield
    signals._received.clear()
    signal.signal(signal.SIGINT, old[0])
    signal.signal(signal.SIGTERM, old[1])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_the_signal_received_decides_the_exit_code(installed, sig, code):
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), sig)
    assert signals.exit_code(KeyboardInterrupt()) == code  # even when the type was lost on the way


def test_sigint_is_handled_even_if_it_was_ignored(installed):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a process started with `&` inherits it
    signals.install()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)

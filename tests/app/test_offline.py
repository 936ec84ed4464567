"""Every page runs with every outgoing connection failing.

A classroom server may have no network at all. The lab embeds its default data, and the pages
that can use downloaded files (ImageNet weights, CIFAR-10) must show a message, not a traceback.
"""

import socket

import pytest

from core.i18n import translate
from tests.app.conftest import isolated_runs_store, open_page

TITLE_KEYS = {"home": "home.title", "architecture": "arch.title", "gradients": "grad.title",
              "finetuning": "ft.title", "training": "train.title", "tta": "tta.title",
              "glossary": "glossary.title"}


class NetworkUnreachable(OSError):
    """The error every outgoing connection raises while the network is off."""


def _fail_connection(*args, **kwargs):
    raise NetworkUnreachable("the tests run without a network")


@pytest.fixture
def no_network(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(socket.socket, "connect", _fail_connection)
    monkeypatch.setattr(socket.socket, "connect_ex", _fail_connection)
    monkeypatch.setattr(socket, "create_connection", _fail_connection)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("empty-torch-home")))
    with isolated_runs_store(tmp_path_factory, "offline-runs"):
        yield


def test_connections_really_fail(no_network):
    with pytest.raises(NetworkUnreachable):
        socket.create_connection(("127.0.0.1", 9))


@pytest.mark.parametrize("name", TITLE_KEYS)
def test_page_runs_offline(no_network, name):
    at = open_page(f"pages/{name}.py", "es")
    at.run()
    assert not at.exception
    assert not at.error, [element.value for element in at.error]
    assert at.title[0].value == translate("es", TITLE_KEYS[name])

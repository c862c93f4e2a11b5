"""The Docker engine for the node agent's tests: skipped, or failed in CI, without it and
busybox-static. (``runtimekit.base_image`` gives a test an image of its own.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nodeagent import images


@pytest.fixture(scope="module")
def docker_client(require: Callable[[str], None]) -> Iterator[Any]:
    try:
        images.inspect_busybox(images.DEFAULT_BUSYBOX)
    except images.BaseImageError:
        require("busybox-static (/bin/busybox)")
    try:
        client = images.docker_client()
    except images.BaseImageError:
        require("docker")
    yield client
    client.close()

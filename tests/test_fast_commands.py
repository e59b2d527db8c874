"""Commands check their arguments before loading anything: a usage error never waits for torch (issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

RUN = """
import json, sys
from turkclip_train.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def _run(*argv):
    done = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.mark.parametrize("argv, message", [
    (["search", "IDX", "   "], "the query is empty"),
    (["search", "IDX"], "give a text query or --image"),
    (["search", "IDX", "kedi", "-k", "0"], "-k must be at least 1"),
    (["search", "IDX", "--image", "nowhere.jpg"], "image not found"),
    (["search", "IDX", "kedi"], "index folder not found"),
    (["classify", "photo.jpg"], "give --labels"),
    (["classify", "photo.jpg", "--labels", " , "], "at least one label"),
    (["classify", "nowhere.jpg", "--labels", "kedi"], "image not found"),
])
def test_usage_errors_are_one_line_and_load_no_torch(argv, message, tmp_path):
    result, err = _run(*[str(tmp_path / a) if a in ("IDX", "nowhere.jpg", "photo.jpg") else a for a in argv])
    assert result == {"code": 1, "torch": False}
    assert message in err and err.count("\n") == 1, err

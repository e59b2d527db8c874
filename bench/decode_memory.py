"""Peak memory of the costliest photo `turkclip.data.images.load_image` still decodes: just under its pixel bound.

Each case runs in a fresh process, which encodes a flat 6300×6300 picture (39.7 MP, under the 40 MP
bound) as PNG — a file of ~0.2 MB, the kind of upload a hostile client sends —, then resets the
process's high-water mark (/proc/self/clear_refs) and decodes it the way every command and the web
server do. Reported: the file's size and how far the peak rose above the resident set before the decode.

    python bench/decode_memory.py
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDE = 6300

CHILD = f"""
import io, sys
from PIL import Image
from turkclip.data.images import load_image

def status(field):
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(field))

mode = sys.argv[1]
picture = Image.new(mode, ({SIDE}, {SIDE}), (10, 200, 30, 128)[: len(mode)])
buffer = io.BytesIO()
picture.save(buffer, "PNG")
del picture
data = buffer.getvalue()
open("/proc/self/clear_refs", "w").write("5")  # the high-water mark starts again from here
before = status("VmRSS:")
load_image(io.BytesIO(data), 224)
print(f"{{len(data) / 1e6:.2f}} {{before:.0f}} {{status('VmHWM:') - before:.0f}}")
"""


def main() -> None:
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
          f" load average (1 min) {os.getloadavg()[0]:.1f}.\n")
    print("| picture | PNG file | RSS before | peak rise during the decode |")
    print("|---|---:|---:|---:|")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for mode, what in [("RGB", "opaque"), ("RGBA", "transparent (composited onto white)")]:
        out = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, check=True, capture_output=True, text=True)
        size, before, rise = out.stdout.split()
        print(f"| {SIDE}×{SIDE} ({SIDE * SIDE / 1e6:.1f} MP), {what} | {size} MB | {before} MiB | +{rise} MiB |")


if __name__ == "__main__":
    main()

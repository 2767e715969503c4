"""Progress bars are drawn on a terminal and never written into a pipe or a log file."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

from .conftest import MODELS_DIR


def _embed(folder: Path, out: Path, stderr: int) -> None:
    command = [sys.executable, "-m", "facebridge", "embed", str(folder), "--model", "arcface-mbf128"]
    options = ["--out", str(out), "--models-dir", str(MODELS_DIR)]
    subprocess.run([*command, *options], stderr=stderr, stdout=subprocess.DEVNULL, timeout=300, check=True)


def test_progress_bars_only_on_a_terminal(lfw: Path, tmp_path: Path) -> None:
    folder = tmp_path / "people" / "Aaron_Peirsol"
    folder.mkdir(parents=True)
    for photo in sorted((lfw / "Aaron_Peirsol").glob("*.jpg"))[:3]:
        shutil.copy(photo, folder)
    log = tmp_path / "embed.log"
    with log.open("wb") as handle:
        _embed(folder.parent, tmp_path / "piped.npz", handle.fileno())
    written = log.read_bytes()
    assert b"embed arcface-mbf128" not in written and b"\r" not in written
    main_fd, terminal_fd = pty.openpty()
    fcntl.ioctl(terminal_fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        _embed(folder.parent, tmp_path / "terminal.npz", terminal_fd)
        os.close(terminal_fd)
        drawn = b""
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # the terminal's other end is closed: everything was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main_fd)
    assert b"embed arcface-mbf128" in drawn and b"3/3" in drawn  # the bar, drawn on the terminal

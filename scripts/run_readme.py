"""Run every ```bash and ```python block of README.md as written, in order, as a newcomer would (CI).

The blocks run in a fresh copy of the working tree (tracked and untracked, not ignored files) with its own
virtual environment (system site-packages visible, so `pip install -e .` needs no download and the checkout's
own install is untouched). A block is skipped only when the line right before its fence is a comment
`<!-- ci: skip, REASON -->` (e.g. needs the real 45 GB dataset, a GPU, or starts a server that never returns).
Stops at the first failing block, prints it and keeps the copy for inspection.
Usage: python scripts/run_readme.py [--keep]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\w*)\s*$")
RUNNERS = {"bash": ["bash", "-e", "-o", "pipefail", "-c"], "python": ["python", "-c"]}
SKIP = re.compile(r"^<!--\s*ci:\s*skip\b(.*?)-->\s*$")


def blocks(text: str) -> list[tuple[int, str, str, str | None]]:
    """(line number, language, code, skip reason or None) for every fenced block."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            previous = lines[i - 1] if i else ""
            skip = SKIP.match(previous)
            found.append((i + 1, match.group(1), "\n".join(lines[i + 1:end]),
                          skip.group(1).strip(" ,:") if skip else None))
            i = end
        i += 1
    return found


def fresh_copy(dest: Path) -> dict[str, str]:
    """Copy the working tree into `dest`, make a virtual environment there; returns its environment."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # deleted-but-staged files are listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(dest / ".venv")], check=True)
    env = {**os.environ, "VIRTUAL_ENV": str(dest / ".venv")}
    env["PATH"] = f"{dest / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    return env


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    work = Path(tempfile.mkdtemp(prefix="chestaid-readme-"))
    env = fresh_copy(work)
    print(f"running README.md's code blocks in a fresh copy: {work}", flush=True)
    ok = run_blocks(work, env)
    if ok and not keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def run_blocks(work: Path, env: dict[str, str]) -> bool:
    """Run the README's blocks in `work`; False at the first failure."""
    ran = skipped = 0
    for line, language, code, reason in blocks((work / "README.md").read_text()):
        if language not in RUNNERS:
            continue
        if reason is not None:
            print(f"README.md:{line}: skipped ({reason})", flush=True)
            skipped += 1
            continue
        print(f"README.md:{line}: running\n{code}", flush=True)
        start = time.perf_counter()
        quiet = language == "python"  # the library prints nothing: a Python block's stderr must stay empty
        result = subprocess.run([*RUNNERS[language], code], cwd=work, env=env,
                                stderr=subprocess.PIPE if quiet else None, text=True)
        if quiet and result.stderr:
            print(result.stderr, file=sys.stderr, end="")
            if result.returncode == 0:
                print(f"README.md:{line}: FAILED: the library wrote to stderr (copy kept in {work})", file=sys.stderr)
                return False
        if result.returncode != 0:
            print(f"README.md:{line}: FAILED with exit code {result.returncode} (copy kept in {work}):\n{code}",
                  file=sys.stderr)
            return False
        print(f"README.md:{line}: ok in {time.perf_counter() - start:.0f} s", flush=True)
        ran += 1
    print(f"README: {ran} code block(s) ran as written, {skipped} skipped (marked)")
    return True


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Regenerates the command outputs shown in README.md, or checks them.

Every output block of the README sits between two HTML comments,

    <!-- output: NAME -->
    ...
    <!-- /output -->

and BLOCKS below says, for each NAME, which commands produce it. The script
runs them in a scratch folder with the built executables first on PATH, then
either rewrites the blocks in place (default) or, with --check, compares and
prints a unified diff of every block that differs (exit status 1). The Swift
tests run the check, so a changed number fails a test rather than misleading
a reader.

    swift build && tools/readme_outputs.py            # rewrite README.md
    tools/readme_outputs.py --check                   # what the tests run
    tools/readme_outputs.py --bin .build/release      # another build folder

Lines that depend on the machine (wall time, memory, thread count, matrix
kernel) are left out of the summary block; everything else is the output
byte for byte.
"""

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lines of the training summary that vary by machine or by run.
MACHINE_LINES = re.compile(r"^(wall time|memory|threads)\s")


def summary_filter(text):
    return "".join(line for line in text.splitlines(keepends=True) if not MACHINE_LINES.match(line))


# Commands run before any block, in the scratch folder: the runs the blocks
# read. Their output is not shown.
SETUP = [
    "lca train -o runs/x --quiet > summary.txt",
    "lca train -o a --quiet > /dev/null",
    "lca train -o runs/u --units --quiet > /dev/null",
    "lca export runs/u/lca.log --to npy -o x.npy",
]

# The numpy session of the README: each line is evaluated as the
# interpreter would, and the value's repr is shown under it.
NUMPY_SESSION = [
    ("import lca_log, numpy as np", "tools/python on sys.path"),
    ('header, records = lca_log.open_log("runs/x/lca.log")', None),
    ('len(records), records["lca"].sum(axis=0)', "per-tensor total LCA"),
    ('np.load("x.npy")["unit_lca"][:, :32].sum(axis=0).argmin()', "lca export --to npy -o x.npy; run with --units"),
]

# name -> (fence language, steps). A step is (shown command or None, shell
# command or None, output filter or None). A shown command is printed after
# "$ "; its output follows when a shell command is given.
BLOCKS = {
    "summary": ("", [(None, "cat summary.txt", summary_filter)]),
    "attribute-json": ("sh", [
        ("lca train -o a --quiet > /dev/null", None, None),
        ("lca attribute --from a/checkpoint-000000.safetensors --to a/checkpoint-000035.safetensors --data digits --json",
         "lca attribute --from a/checkpoint-000000.safetensors --to a/checkpoint-000035.safetensors --data digits --json",
         None),
    ]),
    "logs": ("sh", [
        ("lca show runs/x/lca.log            # the summary table lca train printed (also while it runs)", None, None),
        ("lca train -o - | lca show -        # from a pipe; --follow prints a line per iteration as a run writes",
         None, None),
        ("lca verify runs/x/lca.log", "lca verify runs/x/lca.log", None),
        ("lca export runs/x/lca.log --to csv | head -2 | cut -c1-120",
         "lca export runs/x/lca.log --to csv | head -2 | cut -c1-120", None),
    ]),
    "examples": ("", [
        ("swift run freeze-last-layer        # the paper's \"freeze the last layer\" comparison",
         "freeze-last-layer", None),
        ("swift run lr-sweep --iterations 14  # per-layer total LCA side by side over learning rates",
         "lr-sweep --iterations 14", None),
    ]),
    "numpy": ("python", "numpy"),
}


def run(command, cwd, env):
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0 and "| head" not in command:
        sys.exit(f"readme_outputs: `{command}` failed with status {result.returncode}:\n{result.stderr}")
    return result.stdout


def numpy_block(cwd, env):
    program = ["import sys"]
    for source, _ in NUMPY_SESSION:
        program.append("try:\n    __value = eval(compile(%r, '<readme>', 'eval'))\n"
                       "    if __value is not None: print(repr(__value))\n"
                       "except SyntaxError:\n    exec(%r)\n"
                       "print('\\x00', flush=True)" % (source, source))
    output = run("python3 - <<'EOF'\n" + "\n".join(program) + "\nEOF", cwd, env)
    results = output.split("\x00\n")
    text = ""
    for (source, comment), result in zip(NUMPY_SESSION, results):
        line = ">>> " + source
        if comment:
            line = line.ljust(66) + "# " + comment
        text += line + "\n" + result
    return text


def generate(name, cwd, env):
    language, steps = BLOCKS[name]
    if steps == "numpy":
        body = numpy_block(cwd, env)
    else:
        body = ""
        for shown, command, keep in steps:
            if shown is not None:
                body += "$ " + shown + "\n"
            if command is not None:
                output = run(command, cwd, env)
                body += keep(output) if keep else output
    return "```" + language + "\n" + body + "```\n"


BLOCK = re.compile(r"(<!-- output: ([\w-]+) -->\n)(.*?)(<!-- /output -->)", re.S)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting; exit 1 on a difference")
    parser.add_argument("--bin", default=os.path.join(ROOT, ".build", "debug"),
                        help="folder holding lca, freeze-last-layer and lr-sweep (default .build/debug)")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = parser.parse_args()

    try:
        import numpy  # noqa: F401  (the numpy block runs the README's numpy session)
    except ImportError:
        print("readme_outputs: numpy is not installed (pip install numpy); cannot regenerate the numpy block")
        return 77
    binaries = os.path.abspath(args.bin)
    for tool in ("lca", "freeze-last-layer", "lr-sweep"):
        if not os.access(os.path.join(binaries, tool), os.X_OK):
            sys.exit(f"readme_outputs: {tool} not found in {binaries}; run swift build first")
    with open(args.readme, encoding="utf-8") as file:
        readme = file.read()
    names = [m.group(2) for m in BLOCK.finditer(readme)]
    unknown = sorted(set(names) - set(BLOCKS))
    missing = sorted(set(BLOCKS) - set(names))
    if unknown or missing:
        sys.exit(f"readme_outputs: README blocks without a recipe: {unknown}; recipes without a block: {missing}")

    scratch = tempfile.mkdtemp(prefix="lca-readme-")
    try:
        env = dict(os.environ, PATH=binaries + os.pathsep + os.environ.get("PATH", ""), NO_COLOR="1",
                   PYTHONPATH=os.path.join(ROOT, "tools", "python"), LC_ALL="C.UTF-8")
        env.pop("COLUMNS", None)
        for command in SETUP:
            run(command, scratch, env)
        generated = {name: generate(name, scratch, env) for name in BLOCKS}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    differing = []
    def replace(match):
        name, old = match.group(2), match.group(3)
        new = generated[name]
        if new != old:
            differing.append(name)
            if args.check:
                diff = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                            f"README.md ({name}, as written)", f"README.md ({name}, as the commands print)")
                sys.stdout.write("".join(diff))
        return match.group(1) + new + match.group(4)
    updated = BLOCK.sub(replace, readme)
    if args.check:
        if differing:
            print(f"readme_outputs: {len(differing)} of {len(names)} README output blocks differ from the commands' "
                  f"output: {', '.join(differing)}; run tools/readme_outputs.py to rewrite them")
            return 1
        print(f"readme_outputs: all {len(names)} README output blocks match the commands' output")
        return 0
    if differing:
        with open(args.readme, "w", encoding="utf-8") as file:
            file.write(updated)
    print(f"readme_outputs: rewrote {len(differing)} of {len(names)} blocks"
          + (f" ({', '.join(differing)})" if differing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

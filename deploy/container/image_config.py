"""The runtime config of Legato's image, read from the Dockerfile's final stage.

    python3 image_config.py DOCKERFILE OUTDIR

writes OUTDIR/config.json (the OCI image config's fields: Env, User, WorkingDir, Entrypoint, Cmd,
Volumes, ExposedPorts), OUTDIR/config.sh (the same as bash variables, for run.sh) and
OUTDIR/changes (one `podman import --change` instruction a line). build.sh runs it, so the image
it builds and run.sh runs are configured by the Dockerfile itself. Only the forms the Dockerfile
uses are read: one instruction a line, `ENV K=V`, JSON arrays for ENTRYPOINT, CMD and VOLUME.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

KEPT = ("ENV", "USER", "WORKDIR", "VOLUME", "EXPOSE", "ENTRYPOINT", "CMD")


def final_stage(dockerfile: str) -> list[tuple[str, str]]:
    """(instruction, argument) of each line after the last FROM, continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    start = max(i for i, line in enumerate(lines) if line.split()[0].upper() == "FROM")
    out = []
    for line in lines[start + 1:]:
        word, _, arg = line.partition(" ")
        out.append((word.upper(), arg.strip()))
    return out


def config(dockerfile: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"Env": [], "User": "", "WorkingDir": "/", "Entrypoint": [], "Cmd": [], "Volumes": {},
                           "ExposedPorts": {}}
    for word, arg in final_stage(dockerfile):
        if word not in KEPT:
            continue
        if word == "ENV":
            for pair in shlex.split(arg):
                if "=" not in pair:
                    raise SystemExit(f"image_config: ENV {arg!r}: only the K=V form is read")
                key = pair.split("=", 1)[0]
                cfg["Env"] = [e for e in cfg["Env"] if not e.startswith(key + "=")] + [pair]
        elif word == "USER":
            cfg["User"] = arg
        elif word == "WORKDIR":
            cfg["WorkingDir"] = arg
        elif word == "EXPOSE":
            cfg["ExposedPorts"].update({p if "/" in p else f"{p}/tcp": {} for p in arg.split()})
        else:
            value = json.loads(arg)
            if not isinstance(value, list):
                raise SystemExit(f"image_config: {word} {arg!r}: only the JSON array form is read")
            if word == "VOLUME":
                cfg["Volumes"].update({v: {} for v in value})
            else:
                cfg[word.capitalize() if word == "ENTRYPOINT" else "Cmd"] = value
    return cfg


def shell(cfg: dict[str, Any]) -> str:
    def array(name: str, values: list[str]) -> str:
        return f"{name}=({' '.join(shlex.quote(v) for v in values)})"

    return "\n".join([
        "# Written by deploy/container/image_config.py from the Dockerfile: do not edit.",
        array("IMAGE_ENV", cfg["Env"]),
        f"IMAGE_USER={shlex.quote(cfg['User'])}",
        f"IMAGE_WORKDIR={shlex.quote(cfg['WorkingDir'])}",
        array("IMAGE_ENTRYPOINT", cfg["Entrypoint"]),
        array("IMAGE_CMD", cfg["Cmd"]),
        array("IMAGE_VOLUMES", list(cfg["Volumes"])),
        "",
    ])


def changes(cfg: dict[str, Any]) -> str:
    out = [f"ENV {e}" for e in cfg["Env"]]
    out += [f"USER {cfg['User']}", f"WORKDIR {cfg['WorkingDir']}"]
    out += [f"VOLUME {json.dumps(list(cfg['Volumes']))}"] if cfg["Volumes"] else []
    out += [f"EXPOSE {p}" for p in cfg["ExposedPorts"]]
    out += [f"ENTRYPOINT {json.dumps(cfg['Entrypoint'])}", f"CMD {json.dumps(cfg['Cmd'])}"]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    dockerfile, outdir = Path(argv[1]), Path(argv[2])
    cfg = config(dockerfile.read_text())
    if not cfg["Entrypoint"] or not cfg["User"]:
        raise SystemExit("image_config: the Dockerfile's final stage needs ENTRYPOINT and USER")
    (outdir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (outdir / "config.sh").write_text(shell(cfg))
    (outdir / "changes").write_text(changes(cfg))


if __name__ == "__main__":
    main(sys.argv)

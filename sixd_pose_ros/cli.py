"""`sixd-pose` command line (filled by later steps)."""


def main() -> None:
    raise SystemExit("sixd-pose: no subcommands yet")

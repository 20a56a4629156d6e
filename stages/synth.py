"""DVC stage `synth`: every synthetic set of the course, drawn from params.yaml's `synth` section."""

import argparse
from pathlib import Path

from dltorch.config import SynthConfig, load_section
from dltorch.data.synth import write_sets
from dltorch.entry import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="folder for the <set>.csv files")
    args = parser.parse_args()
    digests = write_sets(load_section(args.params, "synth"), args.out)
    for name, digest in digests.items():
        print(f"{args.out / Path(SynthConfig.path(name)).name}  sha256 {digest}")


if __name__ == "__main__":
    run_stage(main)

